"""Actions whose outcome is unknown: a human says what happened.

An action marked `at_most_once` in its playbook (for a receiver that can't deduplicate) is
never sent twice by the engine: if a call may have reached the receiver without an answer
(a timeout, a worker that died mid-call, a 5xx other than 503), the timeline records
`action_outcome_unknown` and the step waits. A communicator or an admin checks the
receiver and answers here: `sent` (it went out: the step is done) or `resend` (it did not:
send it once more, recorded "sending" again first). The answer is on the timeline with who
gave it; who may answer is decided by the incident aggregate in the workflow's validator.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from domain import errors as codes
from domain.directory import IDENT_PATTERN
from domain.incident import MAX_TEXT, ResolveUnknownActionRequest, TimelineEntry
from workflows.incident import IncidentWorkflow

from .. import lookup
from ..deps import IncidentWriter, ReadModelDep, TemporalDep
from ..errors import IDEMPOTENCY_KEY_REUSED, REQUEST_IN_FLIGHT, responses
from .incidents import IdempotencyKey, IncidentId

router = APIRouter(prefix="/incidents", tags=["incidents"])

StepId = Annotated[
    str, Path(pattern=IDENT_PATTERN, max_length=64, description="the action's step id",
              examples=["publish-statement"])]


class ResolveUnknownBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"outcome": "sent", "comment": "It is live on the newsroom page."}]})

    outcome: Literal["sent", "resend"] = Field(
        description="`sent`: it reached the receiver (the step is done); "
                    "`resend`: it did not, send it once more")
    comment: str = Field(default="", max_length=MAX_TEXT)


class ResolveUnknownOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"entry": {
        "seq": 42, "at": "2026-11-27T22:50:00Z", "kind": "action_outcome_resolved",
        "actor": "cara-comms", "details": {"step": "publish-statement", "resolution": "sent",
                                           "comment": "It is live on the newsroom page."}}}]})

    entry: TimelineEntry


@router.post(
    "/{incident_id}/actions/{step_id}/resolve-unknown", status_code=201,
    response_model=ResolveUnknownOut, operation_id="resolveUnknownAction",
    summary="Say whether an at-most-once action whose outcome is unknown was sent",
    description=("For a communicator or an admin. 409 `NothingToResolve` when the step is "
                 "not an at-most-once action waiting for this answer."),
    responses=responses(401, 403, 404, 409, 413, 422, 503,
                        errors=[codes.FORBIDDEN, codes.INCIDENT_CLOSED,
                                codes.NOTHING_TO_RESOLVE, REQUEST_IN_FLIGHT,
                                codes.REQUEST_CONFLICT, IDEMPOTENCY_KEY_REUSED]),
)
async def resolve_unknown_action(
    incident_id: IncidentId, step_id: StepId, body: ResolveUnknownBody, user: IncidentWriter,
    client: TemporalDep, read_model: ReadModelDep, idempotency_key: IdempotencyKey = None,
) -> ResolveUnknownOut:
    request = ResolveUnknownActionRequest(
        request_id=lookup.request_id(user.id, idempotency_key), actor=user.id,
        step_id=step_id, outcome=body.outcome, comment=body.comment)
    entry: TimelineEntry = await lookup.execute_update(
        client, read_model, incident_id, IncidentWorkflow.resolve_unknown_action, request)
    return ResolveUnknownOut(entry=entry)
