"""Incident, task and timeline models, and the inputs and results of workflow calls.

These are the payloads that cross the Temporal boundary (through the pydantic data
converter) and the shapes the Redis projection stores and the API returns.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from domain.directory import Directory, TimeOff
from domain.playbook import Playbook, Severity
from domain.quorum import Outcome

MAX_TEXT = 4000
MAX_COMMENT = 2000
MAX_DRAFT = 20000


class IncidentStatus(StrEnum):
    open = "open"
    resolved = "resolved"


class TaskState(StrEnum):
    open = "open"
    approved = "approved"
    rejected = "rejected"
    delegated = "delegated"
    cancelled = "cancelled"
    expired = "expired"


TimelineKind = Literal[
    "opened", "report_added", "task_created", "notified", "notification_failed", "decision",
    "delegation", "escalation", "node_outcome", "task_cancelled", "task_expired", "action_run",
    "action_failed", "status_update", "reminder", "waited", "branch_taken", "resolved",
    "task_reassigned", "draft_submitted", "awaiting_draft", "round_outcome",
    "publish_confirmed", "awaiting_publish_confirmation", "notification_delayed",
    # after an outage: one firing stood for several missed slots
    "catch_up",
    # at-most-once actions: about to send; outcome unknown (a human decides); decided
    "action_sending", "action_outcome_unknown", "action_outcome_resolved",
    "posts_paused", "posts_resumed", "posts_resume_failed", "posts_kept_paused",
    "posts_resume_skipped", "time_off_applied",
]


class PlaybookRef(BaseModel):
    id: str
    version: int
    sha256: str


class PlaybookSnapshot(BaseModel):
    """A playbook frozen at incident start: editing the YAML never changes a running incident."""

    id: str
    version: int
    sha256: str
    definition: Playbook

    def ref(self) -> PlaybookRef:
        return PlaybookRef(id=self.id, version=self.version, sha256=self.sha256)


class DirectorySnapshot(BaseModel):
    sha256: str
    definition: Directory


class Report(BaseModel):
    """A signal from anyone: attaches to the open incident with its dedup key."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100)
    summary: str = Field(min_length=1, max_length=MAX_TEXT)
    source_url: str | None = Field(default=None, max_length=2000)
    severity: Severity | None = None
    reported_by: str = Field(min_length=1, max_length=64)


class Incident(BaseModel):
    id: str
    title: str
    summary: str
    severity: Severity
    source_url: str | None = None
    dedup_key: str | None = None
    opened_by: str
    opened_at: datetime
    status: IncidentStatus = IncidentStatus.open
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution_summary: str | None = None
    playbook: PlaybookRef
    reports: int = 1
    rev: int = 0  # bumped on every change; the projection keeps the highest


class Task(BaseModel):
    id: str
    incident_id: str
    node_id: str
    title: str
    content: str
    assignee: str
    role: str | None = None
    state: TaskState = TaskState.open
    via: str = "direct"
    replaces: str | None = None
    created_at: datetime
    deadline: datetime | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    comment: str | None = None
    delegated_from: str | None = None
    delegated_to: str | None = None
    rev: int = 0
    # for nodes that approve drafts: the round and the exact version this task decides
    round: int = 1
    draft_version: int | None = None
    draft_sha256: str | None = None
    # per-channel delivery receipts of the last task message to the holder
    deliveries: list[dict[str, Any]] = Field(default_factory=list)


class NodeState(BaseModel):
    """One approval node: who votes, under which policy, and how it ended."""

    step_id: str
    title: str
    policy: str  # human text, e.g. "1 of legal AND 2 of comms-lead; veto: legal"
    outcome: Outcome | Literal["cancelled"] = Outcome.pending  # cancelled: resolved first
    opened_at: datetime
    ended_at: datetime | None = None
    deadline: datetime | None = None
    tiers_fired: list[int] = Field(default_factory=list)  # firings per escalation tier
    # nodes that approve drafts: the current round, whether it waits for a (re)draft, and
    # the version that was approved
    round: int = 1
    round_started_at: datetime | None = None
    awaiting_draft: bool = False
    draft_version: int | None = None
    approved_sha256: str | None = None


class Draft(BaseModel):
    """One version of a statement under approval; decisions bind to its sha256."""

    node_id: str
    version: int
    text: str
    sha256: str
    author: str
    submitted_at: datetime
    channels: list[str] = Field(default_factory=list)
    link: str | None = None
    # a pre-approved library statement this draft is byte-identical to (lighter policy)
    library_id: str | None = None
    library_version: int | None = None


class TimelineEntry(BaseModel):
    seq: int
    at: datetime
    kind: TimelineKind
    actor: str
    details: dict[str, Any] = Field(default_factory=dict)


class IncidentView(BaseModel):
    """What the `state` query returns and the projection stores."""

    incident: Incident
    tasks: list[Task]
    nodes: list[NodeState]


class IncidentFinal(BaseModel):
    """The workflow's result once the incident is resolved: the last state and timeline."""

    view: IncidentView
    timeline: list[TimelineEntry]


# ---- workflow input -----------------------------------------------------------------


class StartIncident(BaseModel):
    incident_id: str
    title: str = Field(min_length=1, max_length=200)
    summary: str = Field(min_length=1, max_length=MAX_TEXT)
    severity: Severity
    source_url: str | None = None
    dedup_key: str | None = None
    opened_by: str
    opening_report_id: str
    playbook: PlaybookSnapshot
    directory: DirectorySnapshot
    public_url: str = "http://127.0.0.1:8000"
    continue_as_new_after_events: int = 8000
    state: IncidentWorkflowState | None = None  # carried over by continue-as-new
    # the live time-off overlay when the incident opened (later revisions come by signal)
    time_off: TimeOff | None = None


class StepProgress(BaseModel):
    status: Literal["running", "done"] = "running"
    started_at: datetime | None = None
    last_fired_at: datetime | None = None
    outcome: str | None = None
    confirmed_by: str | None = None  # two-person publish


class IncidentWorkflowState(BaseModel):
    """All interpreter state, in one serializable object carried across continue-as-new."""

    incident: Incident
    tasks: dict[str, Task] = Field(default_factory=dict)
    nodes: dict[str, NodeState] = Field(default_factory=dict)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    progress: dict[str, StepProgress] = Field(default_factory=dict)  # by step id
    drafts: dict[str, list[Draft]] = Field(default_factory=dict)  # by approval step id
    time_off: TimeOff | None = None  # the live overlay on the pinned directory
    answered: dict[str, Any] = Field(default_factory=dict)  # request id -> first result
    projected_seq: int = 0  # timeline entries already written to the projection


# ---- update and signal payloads -----------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=100)
    actor: str = Field(min_length=1, max_length=64)


class DecideRequest(_Request):
    task_id: str = Field(min_length=1, max_length=100)
    decision: Literal["approve", "reject"]
    comment: str = Field(default="", max_length=MAX_COMMENT)
    # the sha256 of the draft the decider saw; refused if the draft has changed since
    draft_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class SubmitDraftRequest(_Request):
    node_id: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=MAX_DRAFT)
    channels: list[str] = Field(default_factory=list, max_length=10)
    link: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")
    # use a pre-approved library statement (its newest version unless one is given): the
    # text must be byte-identical to it, and the round is decided under the lighter policy
    library: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    library_version: int | None = Field(default=None, ge=1)

    @model_serializer(mode="wrap")
    def _omit_no_library(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # requests answered before the library existed keep their fingerprint
        data: dict[str, Any] = handler(self)
        for key in ("library", "library_version"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class SubmitDraftResult(BaseModel):
    draft: Draft
    node: NodeState | None = None  # None while the playbook hasn't reached the node yet
    tasks: list[Task] = Field(default_factory=list)  # the new round's tasks


class ConfirmPublishRequest(_Request):
    step_id: str = Field(min_length=1, max_length=64)


class ResolveUnknownActionRequest(_Request):
    """A communicator's answer for an at-most-once action whose outcome is unknown:
    `sent` (it reached the receiver: record it done) or `resend` (send it once more)."""

    step_id: str = Field(min_length=1, max_length=64)
    outcome: Literal["sent", "resend"]
    comment: str = Field(default="", max_length=MAX_TEXT)


class DecideResult(BaseModel):
    task: Task
    node: NodeState


class DelegateRequest(_Request):
    task_id: str = Field(min_length=1, max_length=100)
    to: str = Field(min_length=1, max_length=64)
    comment: str = Field(default="", max_length=MAX_COMMENT)


class DelegateResult(BaseModel):
    task: Task  # the original, now delegated
    new_task: Task


class ReassignRequest(_Request):
    """An admin moves an open task to another eligible voter."""

    task_id: str = Field(min_length=1, max_length=100)
    to: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=MAX_COMMENT)


class CancelTaskRequest(_Request):
    """An admin cancels an open task; its vote no longer counts."""

    task_id: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=MAX_COMMENT)


class KeepPostsPausedRequest(_Request):
    """Keep scheduled posts paused when the incident resolves (`keep: false` undoes it)."""

    keep: bool = True
    reason: str = Field(min_length=1, max_length=MAX_COMMENT)


class StatusUpdateRequest(_Request):
    message: str = Field(min_length=1, max_length=MAX_TEXT)


class ResolveRequest(_Request):
    summary: str = Field(min_length=1, max_length=MAX_TEXT)


class ReportResult(BaseModel):
    created: bool
    incident: Incident
    # the run hands reports signalled after its resolution on to the next incident (so the
    # API may acknowledge signalled reports without asking the workflow); older runs: False
    forwards_late_reports: bool = False


StartIncident.model_rebuild()
