"""Tasks: the caller's inbox, one task, and the approve/reject/delegate actions.

Decisions, delegations and the admin's reassign/cancel go to the incident workflow as
updates. Who holds a task, and who may carry a delegated vote, is decided by the incident
aggregate in the update's validator (`domain.ledger`), never against the eventually
consistent read model: a refused command maps to 403 `NotYourTask`, 404 `TaskNotFound`,
409 `TaskClosed` or 422 `InvalidDelegate`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from domain import errors as codes
from domain.ids import INCIDENT_ID, incident_of_task
from domain.incident import (
    CancelTaskRequest,
    DecideRequest,
    DecideResult,
    DelegateRequest,
    DelegateResult,
    ReassignRequest,
    TaskState,
)
from workflows.incident import IncidentWorkflow

from .. import auth, lookup
from ..deps import InboxUser, ReadModelDep, TaskAdmin, TemporalDep
from ..errors import IDEMPOTENCY_KEY_REUSED, REQUEST_IN_FLIGHT, ApiError, responses
from ..schemas import (
    CancelTaskBody,
    DecisionBody,
    DecisionOut,
    DelegateBody,
    DelegateOut,
    ReassignBody,
    TaskOut,
    TaskPage,
)
from .incidents import IdempotencyKey

router = APIRouter(prefix="/tasks", tags=["tasks"])

TASK_ID_PATTERN = r"^inc-[a-z0-9-]{4,80}\.[a-z0-9][a-z0-9_-]{0,63}\.[0-9]{1,6}$"
TaskId = Annotated[str, Path(pattern=TASK_ID_PATTERN, description="task id",
                             examples=["inc-5f1c0e3b9a7d2c4e8f60-0.holding-statement.1"])]


@router.get(
    "", response_model=TaskPage, summary="The caller's tasks (inbox), newest first",
    operation_id="listTasks",
    description=(
        "Without `assignee` this is the caller's inbox. Leaders and admins may pass any "
        "`assignee`; others only themselves. With `incident_id`, communicators, leaders "
        "and admins see every task of that incident."),
    responses=responses(401, 403, 422, 503),
)
async def list_tasks(
    user: InboxUser, read_model: ReadModelDep,
    state: TaskState | None = None,
    assignee: Annotated[str | None, Query(max_length=64)] = None,
    incident_id: Annotated[str | None, Query(pattern=INCIDENT_ID.pattern)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TaskPage:
    if assignee is not None and assignee != user.id and not user.has_any(auth.TASK_SUPERVISORS):
        raise ApiError(403, "only leaders and admins may list someone else's tasks")
    if assignee is None and not (incident_id is not None and user.has_any(auth.TASK_READERS)):
        assignee = user.id
    try:
        items, next_cursor = await read_model.list_tasks(
            assignee=assignee, state=state, incident_id=incident_id, cursor=cursor, limit=limit)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    return TaskPage(items=items, next_cursor=next_cursor)


@router.get(
    "/{task_id}", response_model=TaskOut, summary="One task", operation_id="getTask",
    responses=responses(401, 403, 404, 422, 503,
                        errors=[codes.TASK_NOT_FOUND, codes.NOT_YOUR_TASK]),
)
async def get_task(task_id: TaskId, user: InboxUser, read_model: ReadModelDep,
                   client: TemporalDep) -> TaskOut:
    return TaskOut(task=await lookup.readable_task(user, read_model, client, task_id))


@router.post(
    "/{task_id}/decision", response_model=DecisionOut,
    summary="Approve or reject your task; answers the node's outcome so far",
    operation_id="decideTask",
    responses=responses(401, 403, 404, 409, 413, 422, 503, errors=[
        codes.TASK_NOT_FOUND, codes.NOT_YOUR_TASK, codes.FORBIDDEN, codes.TASK_CLOSED,
        codes.INCIDENT_CLOSED, codes.DRAFT_CHANGED, codes.REASON_REQUIRED, REQUEST_IN_FLIGHT,
        codes.REQUEST_CONFLICT, IDEMPOTENCY_KEY_REUSED]),
)
async def decide(
    task_id: TaskId, body: DecisionBody, user: InboxUser, client: TemporalDep,
    read_model: ReadModelDep, idempotency_key: IdempotencyKey = None,
) -> DecisionOut:
    # a task the caller may not even see is 404, as an unknown one (no existence oracle);
    # whether the caller holds it is the workflow validator's call
    await lookup.visible_task(user, read_model, client, task_id)
    request = DecideRequest(request_id=lookup.request_id(user.id, idempotency_key),
                            actor=user.id, task_id=task_id, decision=body.decision,
                            comment=body.comment, draft_sha256=body.draft_sha256)
    result: DecideResult = await lookup.execute_update(
        client, read_model, incident_of_task(task_id), IncidentWorkflow.decide, request)
    return DecisionOut(task=result.task, node=result.node)


@router.post(
    "/{task_id}/delegate", response_model=DelegateOut,
    summary="Hand your task to someone else (e.g. a deputy while you travel)",
    operation_id="delegateTask",
    responses=responses(401, 403, 404, 409, 413, 422, 503, errors=[
        codes.TASK_NOT_FOUND, codes.NOT_YOUR_TASK, codes.FORBIDDEN, codes.TASK_CLOSED,
        codes.INCIDENT_CLOSED, REQUEST_IN_FLIGHT, codes.INVALID_DELEGATE,
        codes.REQUEST_CONFLICT, IDEMPOTENCY_KEY_REUSED]),
)
async def delegate(
    task_id: TaskId, body: DelegateBody, user: InboxUser, client: TemporalDep,
    read_model: ReadModelDep, idempotency_key: IdempotencyKey = None,
) -> DelegateOut:
    await lookup.visible_task(user, read_model, client, task_id)
    request = DelegateRequest(request_id=lookup.request_id(user.id, idempotency_key),
                              actor=user.id, task_id=task_id, to=body.to, comment=body.comment)
    result: DelegateResult = await lookup.execute_update(
        client, read_model, incident_of_task(task_id), IncidentWorkflow.delegate, request)
    return DelegateOut(task=result.task, new_task=result.new_task)


@router.post(
    "/{task_id}/reassign", response_model=DelegateOut, operation_id="reassignTask",
    summary="Admin: move an open task to another eligible voter, with a reason",
    description=("The new holder must be an approver who is a member of the task's role, on "
                 "the role's on-call roster, or a deputy named for the original assignee. "
                 "Recorded on the timeline with the admin as actor."),
    responses=responses(401, 403, 404, 409, 413, 422),
)
async def reassign(
    task_id: TaskId, body: ReassignBody, user: TaskAdmin, client: TemporalDep,
    read_model: ReadModelDep, idempotency_key: IdempotencyKey = None,
) -> DelegateOut:
    request = ReassignRequest(request_id=lookup.request_id(user.id, idempotency_key),
                              actor=user.id, task_id=task_id, to=body.to, reason=body.reason)
    result: DelegateResult = await lookup.execute_update(
        client, read_model, incident_of_task(task_id), IncidentWorkflow.reassign, request)
    return DelegateOut(task=result.task, new_task=result.new_task)


@router.post(
    "/{task_id}/cancel", response_model=DecisionOut, operation_id="cancelTask",
    summary="Admin: cancel an open task, with a reason; its vote no longer counts",
    description="The node is evaluated again, so cancelling a vote may decide it.",
    responses=responses(401, 403, 404, 409, 413, 422),
)
async def cancel_task(
    task_id: TaskId, body: CancelTaskBody, user: TaskAdmin, client: TemporalDep,
    read_model: ReadModelDep, idempotency_key: IdempotencyKey = None,
) -> DecisionOut:
    request = CancelTaskRequest(request_id=lookup.request_id(user.id, idempotency_key),
                                actor=user.id, task_id=task_id, reason=body.reason)
    result: DecideResult = await lookup.execute_update(
        client, read_model, incident_of_task(task_id), IncidentWorkflow.cancel_task, request)
    return DecisionOut(task=result.task, node=result.node)
