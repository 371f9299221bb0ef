"""The playbook format: a pydantic v2 schema for `playbooks/*.yaml`.

A playbook is a list of steps. Each step has an `id` and exactly one kind key:

    notify      tell targets something, on log / webhook / email
    approval    a node of parallel approval tasks with a quorum policy, veto, deadline and
                escalation tiers
    wait        sleep for a duration
    action      call a webhook with a templated payload (e.g. publish the statement)
    branch      choose steps by an incident field or an earlier step's outcome
    parallel    run several step lists at once
    sequence    run a nested step list
    reminder    notify every `every` until the incident is resolved
    resolution  wait for the incident to be resolved (the gate that ends the playbook)

Structural rules live here; references to the directory and across steps are checked in
`domain.validation`, which also turns errors into paths such as
`steps[2].approval.require[0].min`.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from domain.directory import IDENT_PATTERN, Target
from domain.durations import Duration


class Severity(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


Channel = Literal["log", "webhook", "email", "apprise"]
STEP_KINDS = (
    "notify", "approval", "wait", "action", "branch", "parallel", "sequence", "reminder",
    "resolution",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _log_only() -> list[Channel]:
    return ["log"]


class Defaults(_Strict):
    channels: list[Channel] = Field(default_factory=_log_only, min_length=1)
    approval_deadline: Duration = timedelta(hours=4)
    respect_working_hours: bool = True


class Notify(_Strict):
    to: list[Target] = Field(min_length=1, max_length=50)
    message: str = Field(min_length=1, max_length=4000)
    channels: list[Channel] | None = Field(default=None, min_length=1)


class Requirement(_Strict):
    role: str = Field(pattern=IDENT_PATTERN)
    min: int = Field(ge=1, le=100)


class EscalationTier(_Strict):
    """Fires `after` the node opened if it has no outcome yet, then every `every` up to
    `repeat` more times."""

    name: str | None = Field(default=None, max_length=100)
    after: Duration
    notify: list[Target] = Field(default_factory=list, max_length=50)
    add_approvers: list[Target] = Field(default_factory=list, max_length=50)
    message: str | None = Field(default=None, max_length=4000)
    repeat: int = Field(default=0, ge=0, le=20)
    every: Duration | None = None

    @model_validator(mode="after")
    def _does_something(self) -> EscalationTier:
        if not self.notify and not self.add_approvers:
            raise ValueError("an escalation tier must notify someone or add approvers")
        if self.repeat and self.every is None:
            raise ValueError("a repeating tier needs `every`")
        return self


Submitter = Literal["communicator", "admin"]


class LibraryStatement(_Strict):
    """A holding statement whose wording legal approved in advance (`approved_by`,
    `approved_on`). Statements are versioned: the same `id` may appear with several
    `version`s, each pinned by the sha256 of its exact text; the playbook's own review
    (and its snapshot sha256) is where the library is approved and pinned."""

    id: str = Field(pattern=IDENT_PATTERN)
    version: int = Field(ge=1)
    title: str = Field(default="", max_length=200)
    text: str = Field(min_length=1, max_length=20000)
    approved_by: str = Field(min_length=1, max_length=200)
    approved_on: date

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def ref(self) -> str:
        return f"{self.id}@v{self.version}"


class LibraryPolicy(_Strict):
    """Who approves a draft that is byte-identical to a library statement (e.g. any one
    comms lead): the wording is already approved, only the decision to use it now is not."""

    approvers: list[Target] = Field(min_length=1, max_length=50)
    quorum: Literal["all", "any"] | QuorumK | None = None
    require: list[Requirement] | None = Field(default=None, min_length=1, max_length=10)

    @model_validator(mode="after")
    def _one_policy(self) -> LibraryPolicy:
        if (self.quorum is None) == (self.require is None):
            raise ValueError("give exactly one of `quorum` (all, any or {k: N}) or `require`")
        return self


class Drafts(_Strict):
    """The node approves a statement that people write during the incident.

    Each submitted draft is a numbered version with an author and a sha256; a decision binds
    to the version it was made on. A new draft opens a new round of the same node with the
    same policy and the same approvers: open tasks of the old round are cancelled, and votes
    on an older version never count. A rejected or vetoed round waits for a redraft instead
    of ending the node; the node ends at its deadline (expired) if none is approved.

    `escalation_clock`: `keep` (default) means tiers and the deadline keep counting from
    when the node first opened: a crisis clock doesn't stop because the words changed, and
    people already escalated to stay escalated. `restart` counts each round afresh.
    """

    submitters: list[Submitter] = Field(
        default_factory=lambda: list[Submitter](["communicator", "admin"]), min_length=1)
    escalation_clock: Literal["keep", "restart"] = "keep"
    max_rounds: int = Field(default=20, ge=1, le=100)
    # round 1 starts at once on the playbook's `content` (rendered) as draft v1 by
    # "playbook": approvers can decide the suggested text while a communicator may replace
    # it with a new draft at any time (a new round)
    start_from_template: bool = False
    # pre-approved holding statements: a draft that names one and is byte-identical to it
    # is decided under `library_policy` instead of the node's own policy (no veto)
    library: list[LibraryStatement] = Field(default_factory=list, max_length=100)
    library_policy: LibraryPolicy | None = None

    @model_validator(mode="after")
    def _library_complete(self) -> Drafts:
        if bool(self.library) != (self.library_policy is not None):
            raise ValueError("a drafts `library` and its `library_policy` go together")
        refs = [s.ref for s in self.library]
        dupes = sorted({r for r in refs if refs.count(r) > 1})
        if dupes:
            raise ValueError(f"library statement versions appear twice: {', '.join(dupes)}")
        return self

    def statement(self, statement_id: str, version: int | None = None
                  ) -> LibraryStatement | None:
        """A library statement by id: the given version, or the newest one."""
        found = [s for s in self.library if s.id == statement_id
                 and (version is None or s.version == version)]
        return max(found, key=lambda s: s.version) if found else None


class Approval(_Strict):
    """Parallel approval tasks. Quorum: `quorum: all|any`, `quorum: {k: N}`, or per-role
    `require` rules combined with AND. Any reject by a `veto` role ends the node rejected.

    With `drafts`, the text under approval is written by a communicator during the incident
    (`content` is then only the suggested template); without it, `content` is the text."""

    title: str = Field(default="Approve the draft", max_length=200)
    drafts: Drafts | None = None  # declared before `content`, whose check reads it
    content: str = Field(default="", max_length=20000, validate_default=True)
    approvers: list[Target] = Field(min_length=1, max_length=50)
    quorum: Literal["all", "any"] | QuorumK | None = None
    require: list[Requirement] | None = Field(default=None, min_length=1, max_length=10)
    veto: list[str] = Field(default_factory=list, max_length=10)
    deadline: Duration | None = None
    escalation: list[EscalationTier] = Field(default_factory=list, max_length=10)
    on_approved: list[Step] = Field(default_factory=list)
    on_rejected: list[Step] = Field(default_factory=list)

    @field_validator("quorum", mode="before")
    @classmethod
    def _quorum_shape(cls, value: Any) -> Any:
        # One clear message instead of one error per member of the union.
        if value is None or isinstance(value, dict | QuorumK) or value in ("all", "any"):
            return value
        raise ValueError("quorum is `all`, `any` or `{k: N}` (at least N approvals)")

    @model_validator(mode="after")
    def _one_policy(self) -> Approval:
        if (self.quorum is None) == (self.require is None):
            raise ValueError("give exactly one of `quorum` (all, any or {k: N}) or `require`")
        return self

    @field_validator("content")
    @classmethod
    def _content_or_drafts(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip() and info.data.get("drafts") is None:
            raise ValueError("an approval needs `content` (the text to approve) unless it "
                             "takes `drafts` written during the incident")
        return value


class QuorumK(_Strict):
    k: int = Field(ge=1, le=100)


class ResumeCall(_Strict):
    """The call that resumes what an action paused (e.g. scheduled posts)."""

    url: str = Field(pattern=r"^(https?://|/)", max_length=2000)
    method: Literal["POST", "PUT"] = "POST"
    payload: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)


class Wait(_Strict):
    duration: Duration


class Action(_Strict):
    """Call a webhook. With `publishes: <approval step id>` the action publishes that node's
    approved draft: `{{ steps.<id>.content }}` is exactly the approved text, its sha256 is
    checked before sending and sent as `X-Crisis-Content-SHA256`, and the timeline records
    the hash published. `confirm: two_person` waits, after approval, for a second person
    (not the draft's author) to confirm the publish.

    Every call carries the stable header `Idempotency-Key: <incident id>:<step id>`, and a
    call that fails for now is sent again with the same key: a receiver that stores the
    first answer per key and replays it makes the action exactly-once. For a receiver that
    can't deduplicate, `at_most_once: true`: the timeline records "sending" before the
    call, and if the call may have reached the receiver without an answer (a timeout, a
    crashed worker, a 5xx other than 503) it is never sent again; the timeline says the
    outcome is unknown and a communicator decides "it was sent" or "send it again"
    (`POST /incidents/{id}/actions/{step}/resolve-unknown`)."""

    url: str = Field(pattern=r"^(https?://|/)", max_length=2000)  # "/x": under CRISIS_PUBLIC_URL
    method: Literal["POST", "PUT"] = "POST"
    payload: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    publishes: str | None = Field(default=None, pattern=IDENT_PATTERN)
    confirm: Literal["none", "two_person"] = "none"
    at_most_once: bool = False
    # this action pauses something (the organisation's post scheduler): when the incident
    # is resolved the workflow makes this call to resume it, unless someone asked through
    # the API to keep it paused. Both calls are on the timeline with their status.
    resume_on_resolve: ResumeCall | None = None

    @model_validator(mode="after")
    def _confirm_needs_draft(self) -> Action:
        if self.confirm == "two_person" and self.publishes is None:
            raise ValueError("`confirm: two_person` needs `publishes: <approval step id>`")
        if self.resume_on_resolve is not None and self.publishes is not None:
            raise ValueError("a publish can't be resumed: `resume_on_resolve` is for an "
                             "action that pauses something")
        return self


class Branch(_Strict):
    """`on` is `incident.<field>` or `steps.<id>.outcome`; `cases` maps values to steps."""

    on: str = Field(min_length=1, max_length=100)
    cases: dict[str, list[Step]] = Field(min_length=1)
    default: list[Step] = Field(default_factory=list)


class Parallel(_Strict):
    branches: list[list[Step]] = Field(min_length=2, max_length=10)


class Sequence(_Strict):
    steps: list[Step] = Field(min_length=1)


class Reminder(_Strict):
    every: Duration
    to: list[Target] = Field(min_length=1, max_length=50)
    message: str = Field(min_length=1, max_length=4000)
    channels: list[Channel] | None = Field(default=None, min_length=1)


class Resolution(_Strict):
    """Waits until the incident is resolved through the API."""

    note: str | None = None


class Step(_Strict):
    id: str = Field(pattern=IDENT_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    notify: Notify | None = None
    approval: Approval | None = None
    wait: Wait | None = None
    action: Action | None = None
    branch: Branch | None = None
    parallel: Parallel | None = None
    sequence: Sequence | None = None
    reminder: Reminder | None = None
    resolution: Resolution | None = None

    @model_validator(mode="before")
    @classmethod
    def _resolution_shorthand(cls, data: Any) -> Any:
        # `resolution: {}` and a bare `resolution:` (YAML null) both mean "the gate".
        if isinstance(data, dict) and "resolution" in data and data["resolution"] is None:
            data = {**data, "resolution": {}}
        return data

    @model_serializer(mode="wrap")
    def _omit_absent_kinds(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Without this a dump carries `resolution: null` on every step, which the shorthand
        # above would read back as a resolution gate: snapshots must round-trip.
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if not (k in STEP_KINDS and v is None)}

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Step:
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a step needs exactly one of " + ", ".join(STEP_KINDS)
                + (f" (found {', '.join(kinds)})" if kinds else "")
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)

    def children(self) -> list[tuple[str, list[Step]]]:
        """Nested step lists with their path suffix, for walking the tree."""
        if self.approval is not None:
            return [("approval.on_approved", self.approval.on_approved),
                    ("approval.on_rejected", self.approval.on_rejected)]
        if self.branch is not None:
            out = [(f"branch.cases.{key}", steps) for key, steps in self.branch.cases.items()]
            return [*out, ("branch.default", self.branch.default)]
        if self.parallel is not None:
            return [(f"parallel.branches[{i}]", b) for i, b in enumerate(self.parallel.branches)]
        if self.sequence is not None:
            return [("sequence.steps", self.sequence.steps)]
        return []


class Playbook(_Strict):
    id: str = Field(pattern=IDENT_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    version: int = Field(ge=1)
    description: str = Field(default="", max_length=4000)
    severities: list[Severity] = Field(default_factory=lambda: list(Severity), min_length=1)
    defaults: Defaults = Field(default_factory=Defaults)
    steps: list[Step] = Field(min_length=1, max_length=200)

    def walk(self) -> list[tuple[str, Step]]:
        """Every step with its path (`steps[1].approval.on_approved[0]`), depth first."""
        out: list[tuple[str, Step]] = []

        def visit(prefix: str, steps: list[Step]) -> None:
            for index, step in enumerate(steps):
                path = f"{prefix}[{index}]"
                out.append((path, step))
                for suffix, nested in step.children():
                    visit(f"{path}.{suffix}", nested)

        visit("steps", self.steps)
        return out

    def step(self, step_id: str) -> Step:
        return next(step for _, step in self.walk() if step.id == step_id)


LibraryPolicy.model_rebuild()
Drafts.model_rebuild()
Approval.model_rebuild()
Branch.model_rebuild()
Parallel.model_rebuild()
Sequence.model_rebuild()
Step.model_rebuild()
Playbook.model_rebuild()
