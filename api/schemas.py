"""Request and response bodies of the HTTP API.

Request bodies forbid unknown fields (422) and bound every string and list. Response
bodies reuse the domain models (`Incident`, `Task`, `TimelineEntry`...) so the API shows
exactly what the workflow and the read model hold. Every model carries an OpenAPI example.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.directory import IDENT_PATTERN
from domain.incident import (
    MAX_COMMENT,
    MAX_TEXT,
    Incident,
    NodeState,
    PlaybookRef,
    Task,
    TimelineEntry,
)
from domain.metrics import IncidentMetrics
from domain.playbook import Playbook, Severity

MAX_DEDUP_KEY = 200
MAX_URL = 2000
MAX_YAML = 200_000
URL_PATTERN = r"^https?://\S+$"

INCIDENT_ID_EXAMPLE = "inc-5f1c0e3b9a7d2c4e8f60-0"
TASK_ID_EXAMPLE = f"{INCIDENT_ID_EXAMPLE}.approve-holding.1"


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


# ---- requests ---------------------------------------------------------------------


class OpenIncidentRequest(BaseModel):
    model_config = _examples({
        "title": "Viral complaint about the holiday ad",
        "summary": "A parent's post about our ad has 40k shares in two hours.",
        "severity": "high",
        "playbook": "viral-complaint",
        "source_url": "https://social.example/post/123",
        "dedup_key": "social:post:123",
    })

    title: str = Field(min_length=1, max_length=200)
    summary: str = Field(min_length=1, max_length=MAX_TEXT)
    severity: Severity
    playbook: str = Field(pattern=IDENT_PATTERN, max_length=64)
    source_url: str | None = Field(default=None, max_length=MAX_URL, pattern=URL_PATTERN)
    dedup_key: str | None = Field(default=None, min_length=1, max_length=MAX_DEDUP_KEY)


class ReportRequest(BaseModel):
    model_config = _examples({
        "summary": "Customers are sharing a video of a prank in one of our kitchens.",
        "source_url": "https://video.example/watch?v=abc",
        "dedup_key": "video:abc",
        "severity": "high",
    })

    summary: str = Field(min_length=1, max_length=MAX_TEXT)
    source_url: str | None = Field(default=None, max_length=MAX_URL, pattern=URL_PATTERN)
    dedup_key: str | None = Field(
        default=None, min_length=1, max_length=MAX_DEDUP_KEY,
        description="Reports with one key attach to one open incident. Without a key, the "
                    "source_url is the key; without either, the report opens its own incident.")
    severity: Severity | None = Field(
        default=None, description="Chooses the playbook through the routing table when the "
                                  "report opens an incident; default `medium`.")


class StatusUpdateBody(BaseModel):
    model_config = _examples({"message": "Holding statement published; monitoring replies."})

    message: str = Field(min_length=1, max_length=MAX_TEXT)


class ResolveBody(BaseModel):
    model_config = _examples({"summary": "Apology posted, ad withdrawn, sentiment recovering."})

    summary: str = Field(min_length=1, max_length=MAX_TEXT)


class DecisionBody(BaseModel):
    model_config = _examples({"decision": "approve", "comment": "Fine from Legal."})

    decision: Literal["approve", "reject"]
    comment: str = Field(default="", max_length=MAX_COMMENT)
    draft_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="the sha256 of the draft you read; refused with 409 `DraftChanged` if "
                    "a newer version has replaced it. A reject of a draft needs a comment.")


class DelegateBody(BaseModel):
    model_config = _examples({"to": "dana", "comment": "On a plane until 22:00."})

    to: str = Field(pattern=IDENT_PATTERN, max_length=64)
    comment: str = Field(default="", max_length=MAX_COMMENT)


class ReassignBody(BaseModel):
    model_config = _examples({"to": "leo-legal", "reason": "Lena is in hospital"})

    to: str = Field(pattern=IDENT_PATTERN, max_length=64)
    reason: str = Field(min_length=1, max_length=MAX_COMMENT)


class CancelTaskBody(BaseModel):
    model_config = _examples({"reason": "Left the company"})

    reason: str = Field(min_length=1, max_length=MAX_COMMENT)


class ValidateBody(BaseModel):
    model_config = _examples({"yaml": "id: viral-complaint\nname: Viral complaint\nversion: 3\n"
                                      "steps:\n  - id: tell\n    notify: {to: [{role: social}], "
                                      "message: hi}\n"})

    yaml: str = Field(min_length=1, max_length=MAX_YAML)


# ---- responses --------------------------------------------------------------------

_INCIDENT_EXAMPLE: dict[str, Any] = {
    "id": INCIDENT_ID_EXAMPLE, "title": "Viral complaint about the holiday ad",
    "summary": "A parent's post about our ad has 40k shares in two hours.",
    "severity": "high", "source_url": "https://social.example/post/123",
    "dedup_key": "social:post:123", "opened_by": "carol",
    "opened_at": "2026-03-06T17:40:00Z", "status": "open", "resolved_at": None,
    "resolved_by": None, "resolution_summary": None,
    "playbook": {"id": "viral-complaint", "version": 3, "sha256": "9f86d0...f00a08"},
    "reports": 1, "rev": 4,
}
_TASK_EXAMPLE: dict[str, Any] = {
    "id": TASK_ID_EXAMPLE, "incident_id": INCIDENT_ID_EXAMPLE, "node_id": "approve-holding",
    "title": "Approve the holding statement", "content": "We hear you...", "assignee": "lena",
    "role": "legal", "state": "open", "via": "role", "replaces": None,
    "created_at": "2026-03-06T17:40:01Z", "deadline": "2026-03-06T21:40:01Z",
    "decided_at": None, "decided_by": None, "comment": None, "delegated_from": None,
    "delegated_to": None, "rev": 1,
}
_NODE_EXAMPLE: dict[str, Any] = {
    "step_id": "approve-holding", "title": "Approve the holding statement",
    "policy": "1 of legal AND 2 of comms-lead; veto: legal", "outcome": "pending",
    "opened_at": "2026-03-06T17:40:01Z", "ended_at": None, "deadline": None,
    "tiers_fired": [],
}
_ENTRY_EXAMPLE: dict[str, Any] = {
    "seq": 1, "at": "2026-03-06T17:40:00Z", "kind": "opened", "actor": "carol",
    "details": {"playbook": "viral-complaint", "version": 3},
}


class Links(BaseModel):
    self: str
    timeline: str
    tasks: str


class OpenIncidentResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": INCIDENT_ID_EXAMPLE, "status": "open", "created": True,
        "report_id": "rep-2b7e4a", "playbook": _INCIDENT_EXAMPLE["playbook"],
        "links": {"self": f"/incidents/{INCIDENT_ID_EXAMPLE}",
                  "timeline": f"/incidents/{INCIDENT_ID_EXAMPLE}/timeline",
                  "tasks": f"/tasks?incident_id={INCIDENT_ID_EXAMPLE}"},
    }]})

    id: str
    status: str
    created: bool = Field(description="false: the dedup_key matched an open incident")
    report_id: str
    playbook: PlaybookRef
    links: Links


class ReportReceipt(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "incident_id": INCIDENT_ID_EXAMPLE, "created": False, "report_id": "rep-2b7e4a"}]})

    incident_id: str
    created: bool
    report_id: str


class IncidentPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "items": [_INCIDENT_EXAMPLE], "next_cursor": None}]})

    items: list[Incident]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class IncidentDetail(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "incident": _INCIDENT_EXAMPLE, "playbook": _INCIDENT_EXAMPLE["playbook"],
        "nodes": [_NODE_EXAMPLE], "open_tasks": [_TASK_EXAMPLE], "tasks": [_TASK_EXAMPLE]}]})

    incident: Incident
    playbook: PlaybookRef = Field(description="the version this incident runs, fixed at start")
    nodes: list[NodeState]
    open_tasks: list[Task]
    tasks: list[Task] = Field(description="every task, open or closed")


class Timeline(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "incident_id": INCIDENT_ID_EXAMPLE, "entries": [_ENTRY_EXAMPLE]}]})

    incident_id: str
    entries: list[TimelineEntry] = Field(description="oldest first")
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null on the last page")
    next: str | None = Field(default=None, description="URL of the next page, if any")


class IncidentOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"incident": _INCIDENT_EXAMPLE}]})

    incident: Incident


class StatusUpdateOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"entry": {
        **_ENTRY_EXAMPLE, "seq": 9, "kind": "status_update",
        "details": {"message": "Holding statement published."}}}]})

    entry: TimelineEntry


class TaskPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "items": [_TASK_EXAMPLE], "next_cursor": None}]})

    items: list[Task]
    next_cursor: str | None


class TaskOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"task": _TASK_EXAMPLE}]})

    task: Task


class DecisionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "task": {**_TASK_EXAMPLE, "state": "approved", "decided_by": "lena",
                 "decided_at": "2026-03-06T17:52:10Z", "comment": "Fine from Legal."},
        "node": _NODE_EXAMPLE}]})

    task: Task
    node: NodeState = Field(description="the approval node's outcome so far")


class DelegateOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "task": {**_TASK_EXAMPLE, "state": "delegated", "delegated_to": "dana"},
        "new_task": {**_TASK_EXAMPLE, "id": f"{INCIDENT_ID_EXAMPLE}.approve-holding.5",
                     "assignee": "dana", "delegated_from": "lena"}}]})

    task: Task = Field(description="the original task, now delegated")
    new_task: Task = Field(description="the delegate's task")


class PlaybookSummary(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "viral-complaint", "name": "Viral complaint", "version": 3,
        "sha256": "9f86d0...f00a08", "description": "Social post going viral",
        "severities": ["medium", "high"]}]})

    id: str
    name: str
    version: int
    sha256: str
    description: str
    severities: list[Severity]


class PlaybookList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [{
        "id": "viral-complaint", "name": "Viral complaint", "version": 3,
        "sha256": "9f86d0...f00a08", "description": "", "severities": ["high"]}]}]})

    items: list[PlaybookSummary]


class PlaybookDetail(PlaybookSummary):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "viral-complaint", "name": "Viral complaint", "version": 3,
        "sha256": "9f86d0...f00a08", "description": "", "severities": ["high"],
        "definition": {"id": "viral-complaint", "name": "Viral complaint", "version": 3,
                       "steps": [{"id": "tell-social",
                                  "notify": {"to": [{"role": "social"}], "message": "..."}}]},
        "mermaid": "flowchart TD\n  tell-social[notify social]"}]})

    definition: Playbook
    mermaid: str


class ValidationIssue(BaseModel):
    path: str
    message: str


class ValidateOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "valid": False, "playbook": None,
        "errors": [{"path": "steps[2].approval.require[0].min",
                    "message": "impossible quorum: needs 3 of 'legal' but only 2 could vote"}]}]})

    valid: bool
    errors: list[ValidationIssue]
    playbook: PlaybookRef | None


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"]


class Readiness(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ok", "checks": {"temporal": "ok", "redis": "ok"}},
        {"status": "unavailable", "checks": {"temporal": "ok", "redis": "error: timed out"}},
    ]})

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


class SinkEntry(BaseModel):
    received_at: datetime
    body: Any


class SinkList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "statements", "items": [{"received_at": "2026-03-06T17:55:02Z",
                                         "body": {"text": "We hear you."}}]}]})

    name: str
    items: list[SinkEntry]


class SinkAck(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "statements",
                                                               "stored": 3}]})

    name: str
    stored: int


_LAGGARD_EXAMPLE: dict[str, Any] = {
    "name": "legal", "task_id": f"{INCIDENT_ID_EXAMPLE}.approve-holding.1",
    "node": "approve-holding", "seconds": 10800.0, "pending": True, "answered": False,
}


class IncidentMetricsOut(IncidentMetrics):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "incident_id": INCIDENT_ID_EXAMPLE, "as_of": "2026-03-09T09:00:00Z",
        "opened_at": "2026-03-06T17:40:00Z", "first_ack_at": "2026-03-06T17:52:10Z",
        "time_to_first_ack": 730.0, "resolved_at": None, "time_to_resolution": None,
        "nodes": [{"node": "approve-holding", "title": "Approve the holding statement",
                   "policy": "1 of legal AND 2 of comms-lead; veto: legal",
                   "outcome": "pending", "opened_at": "2026-03-06T17:40:01Z", "ended_at": None,
                   "time_to_outcome": None, "escalations": 2,
                   "slowest_person": {**_LAGGARD_EXAMPLE, "name": "lena"},
                   "slowest_role": _LAGGARD_EXAMPLE}],
        "decisions": [{"task_id": f"{INCIDENT_ID_EXAMPLE}.approve-holding.2",
                       "node": "approve-holding", "person": "cara", "role": "comms-lead",
                       "decision": "approve", "decided_at": "2026-03-06T17:52:10Z",
                       "latency": 729.0}],
        "slowest_person": {**_LAGGARD_EXAMPLE, "name": "lena"},
        "slowest_role": _LAGGARD_EXAMPLE,
        "counts": {"reports": 3, "status_updates": 1,
                   "tasks_by_state": {"open": 3, "approved": 1, "rejected": 0, "delegated": 0,
                                      "cancelled": 0, "expired": 0}}}]})
