"""Drafts: the statement under approval, written during the incident, version by version.

`POST /incidents/{id}/drafts` submits a new version of an approval node's text (a new
round of the node if it is open); `GET /incidents/{id}/drafts` lists every version with
its sha256, author and a diff against the previous one, read from the immutable timeline;
`POST /incidents/{id}/publish-confirmations` is the second person of a two-person publish.
Who may do what is decided by the incident aggregate in the workflow's validators.
"""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from domain.directory import IDENT_PATTERN
from domain.incident import (
    MAX_COMMENT,
    MAX_DRAFT,
    ConfirmPublishRequest,
    KeepPostsPausedRequest,
    NodeState,
    SubmitDraftRequest,
    SubmitDraftResult,
    Task,
    TimelineEntry,
)
from workflows.incident import IncidentWorkflow

from .. import lookup
from ..deps import CurrentUser, IncidentWriter, ReadModelDep, TemporalDep
from ..errors import responses
from .incidents import IdempotencyKey, IncidentId, readable_view

router = APIRouter(prefix="/incidents", tags=["drafts"])


_SHA = "9f2c1a7be1d0c3f4a5b6c7d8e9f00112233445566778899aabbccddeeff0011"
_DRAFT = {"version": 2, "sha256": _SHA, "text": "We're sorry. We will update by 20:00.",
          "author": "cara-comms", "submitted_at": "2026-11-27T22:41:00Z",
          "channels": ["twitter"], "link": None,
          "diff": "--- v1\n+++ v2\n@@ -1 +1 @@\n-We are looking into it.\n"
                  "+We're sorry. We will update by 20:00.\n"}


def _examples(example: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


class DraftBody(BaseModel):
    model_config = _examples({"node": "holding-statement",
                              "text": "We're sorry. We will update by 20:00.",
                              "channels": ["twitter"]})

    node: str = Field(pattern=IDENT_PATTERN, description="the approval step id",
                      examples=["holding-statement"])
    text: str = Field(min_length=1, max_length=MAX_DRAFT)
    channels: list[str] = Field(default_factory=list, max_length=10,
                                description="where the statement will go, e.g. twitter")
    link: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")
    library: str | None = Field(
        default=None, pattern=IDENT_PATTERN,
        description="use this pre-approved library statement (the text must be "
                    "byte-identical to it): the round is decided under the playbook's "
                    "lighter `library_policy`", examples=["aware-looking"])
    library_version: int | None = Field(default=None, ge=1,
                                        description="the statement's version (default: newest)")


class DraftOut(BaseModel):
    model_config = _examples(_DRAFT)

    version: int
    sha256: str
    text: str
    author: str
    submitted_at: datetime
    channels: list[str] = Field(default_factory=list)
    link: str | None = None
    library: str | None = Field(default=None,
                                description="the library statement used, as id@vN")
    diff: str = Field(description="unified diff against the previous version ('' for v1)")


class SubmittedDraft(BaseModel):
    model_config = _examples({"draft": _DRAFT, "node": None, "tasks": []})

    draft: DraftOut
    node: NodeState | None = Field(description="None until the playbook reaches the node")
    tasks: list[Task] = Field(description="the new round's tasks")


class DraftList(BaseModel):
    model_config = _examples({"incident_id": "inc-5f1c0e3b9a7d2c4e8f60-0",
                              "nodes": {"holding-statement": [_DRAFT]}})

    incident_id: str
    nodes: dict[str, list[DraftOut]] = Field(description="approval step id -> versions")


class ConfirmBody(BaseModel):
    model_config = _examples({"step": "publish-statement"})

    step: str = Field(pattern=IDENT_PATTERN, examples=["publish-statement"])


class ConfirmOut(BaseModel):
    model_config = _examples({"entry": {
        "seq": 31, "at": "2026-11-27T22:50:00Z", "kind": "publish_confirmed",
        "actor": "sam-social", "details": {"step": "publish-statement", "version": 2,
                                           "sha256": _SHA, "author": "cara-comms"}}})

    entry: TimelineEntry


def _diff(previous: str | None, text: str, version: int) -> str:
    if previous is None:
        return ""
    return "".join(difflib.unified_diff(
        previous.splitlines(keepends=True), text.splitlines(keepends=True),
        fromfile=f"v{version - 1}", tofile=f"v{version}"))


def drafts_from_timeline(entries: list[TimelineEntry]) -> dict[str, list[DraftOut]]:
    out: dict[str, list[DraftOut]] = {}
    for entry in sorted(entries, key=lambda e: e.seq):
        if entry.kind != "draft_submitted":
            continue
        d = entry.details
        versions = out.setdefault(d["node"], [])
        versions.append(DraftOut(
            version=d["version"], sha256=d["sha256"], text=d["text"], author=entry.actor,
            submitted_at=entry.at, channels=d.get("channels") or [], link=d.get("link"),
            library=f"{d['library']}@v{d['library_version']}" if d.get("library") else None,
            diff=_diff(versions[-1].text if versions else None, d["text"], d["version"])))
    return out


@router.post(
    "/{incident_id}/drafts", status_code=201, response_model=SubmittedDraft,
    operation_id="submitDraft",
    summary="Submit a new version of an approval node's statement",
    description=("Opens a new round of the node if it is running: open tasks of the old "
                 "round are cancelled and the same approvers decide this version. Errors: "
                 "403 `Forbidden` (not a submitter), 409 `DraftRefused` (the node takes no "
                 "drafts, has ended or is out of rounds), 409 `IncidentClosed`, 409 "
                 "`LibraryMismatch` (`library` names no statement of the node's library, or "
                 "the text is not byte-identical to it: only the exact pre-approved wording "
                 "may use the lighter policy)."),
    responses=responses(401, 403, 404, 409, 413, 422),
)
async def submit_draft(incident_id: IncidentId, body: DraftBody, user: IncidentWriter,
                       client: TemporalDep, read_model: ReadModelDep,
                       idempotency_key: IdempotencyKey = None) -> SubmittedDraft:
    request = SubmitDraftRequest(
        request_id=lookup.request_id(user.id, idempotency_key), actor=user.id,
        node_id=body.node, text=body.text, channels=body.channels, link=body.link,
        library=body.library, library_version=body.library_version)
    result: SubmitDraftResult = await lookup.execute_update(
        client, read_model, incident_id, IncidentWorkflow.submit_draft, request)
    entries = await lookup.timeline(read_model, client, incident_id)
    versions = drafts_from_timeline(entries).get(body.node, [])
    shown = next((v for v in versions if v.version == result.draft.version), None)
    if shown is None:  # the read model has not caught up: no diff rather than a wrong one
        d = result.draft
        shown = DraftOut(version=d.version, sha256=d.sha256, text=d.text, author=d.author,
                         submitted_at=d.submitted_at, channels=d.channels, link=d.link,
                         library=f"{d.library_id}@v{d.library_version}" if d.library_id
                         else None, diff="")
    return SubmittedDraft(draft=shown, node=result.node, tasks=result.tasks)


@router.get(
    "/{incident_id}/drafts", response_model=DraftList, operation_id="listDrafts",
    summary="Every draft version of the incident, with sha256 and a diff to the previous",
    responses=responses(401, 403, 404, 422),
)
async def list_drafts(incident_id: IncidentId, user: CurrentUser, read_model: ReadModelDep,
                      client: TemporalDep) -> DraftList:
    await readable_view(user, read_model, client, incident_id)
    entries = await lookup.timeline(read_model, client, incident_id)
    return DraftList(incident_id=incident_id, nodes=drafts_from_timeline(entries))


@router.post(
    "/{incident_id}/publish-confirmations", status_code=201, response_model=ConfirmOut,
    operation_id="confirmPublish",
    summary="Two-person publish: confirm, as someone other than the draft's author",
    description=("403 `Forbidden` for the draft's author or a non-communicator; 409 "
                 "`NotAwaitingConfirmation` when no publish waits for a confirmation."),
    responses=responses(401, 403, 404, 409, 413, 422),
)
async def confirm_publish(incident_id: IncidentId, body: ConfirmBody, user: IncidentWriter,
                          client: TemporalDep, read_model: ReadModelDep,
                          idempotency_key: IdempotencyKey = None) -> ConfirmOut:
    request = ConfirmPublishRequest(request_id=lookup.request_id(user.id, idempotency_key),
                                    actor=user.id, step_id=body.step)
    entry: TimelineEntry = await lookup.execute_update(
        client, read_model, incident_id, IncidentWorkflow.confirm_publish, request)
    return ConfirmOut(entry=entry)


class KeepPausedBody(BaseModel):
    model_config = _examples({"keep": True, "reason": "Second wave of posts; hold the promo"})

    keep: StrictBool = Field(default=True,
                             description="false: posts resume on resolution again")
    reason: str = Field(min_length=1, max_length=MAX_COMMENT)


@router.post(
    "/{incident_id}/scheduled-posts/keep-paused", status_code=201, response_model=ConfirmOut,
    operation_id="keepPostsPaused",
    summary="Keep scheduled posts paused when the incident resolves (or undo that)",
    description=("The playbook's pausing action resumes the organisation's post scheduler on "
                 "resolution unless this says otherwise; the latest request wins and is on "
                 "the timeline. 403 `Forbidden` for a non-communicator; 409 `NoPausedPosts` "
                 "when the playbook pauses nothing; 409 `IncidentClosed`."),
    responses=responses(401, 403, 404, 409, 413, 422),
)
async def keep_posts_paused(incident_id: IncidentId, body: KeepPausedBody, user: IncidentWriter,
                            client: TemporalDep, read_model: ReadModelDep,
                            idempotency_key: IdempotencyKey = None) -> ConfirmOut:
    request = KeepPostsPausedRequest(request_id=lookup.request_id(user.id, idempotency_key),
                                     actor=user.id, keep=body.keep, reason=body.reason)
    entry: TimelineEntry = await lookup.execute_update(
        client, read_model, incident_id, IncidentWorkflow.keep_posts_paused, request)
    return ConfirmOut(entry=entry)
