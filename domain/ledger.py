"""The incident aggregate: the one writer of a running incident's state.

`Ledger` owns the one serializable `IncidentWorkflowState` the workflow carries (also across
continue-as-new) and is the only code that changes it:

- opening: `Ledger.open` builds the state and the `opened` entry;
- step progress: `progress`, `finish_step`, `set_outcome`, `fire_reminder`;
- approval nodes: `open_approval` (tasks, off-hours top-up, "not enough approvers"),
  `next_tier` and `fire_tier` (escalation), `expire_node`, `close_node`;
- deliveries and actions: `record_delivery`, `record_delivery_failure`, `record_action`;
  at-most-once actions: `action_sending`, `action_outcome_unknown`, `resolve_unknown`;
- the five commands, each idempotent by request id: `add_report`, `decide`, `delegate`,
  `post_status_update`, `resolve` (plus the admin commands `reassign` and `cancel_task`).
  Each has a `validate_*` twin for the workflow's update validators, so a refused command
  leaves no trace in history.

It knows nothing of Temporal: the caller passes the time (`workflow.now()`) and turns
`LedgerError` into `ApplicationError`. Changes are tracked so `take_batch` can hand the
projection exactly what changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from domain import errors
from domain.directory import (
    AccessRole,
    AssignedVia,
    Assignment,
    Directory,
    Person,
    Target,
    TimeOff,
    resolve_targets,
)
from domain.effects import ChannelReceipt, ProjectionBatch
from domain.errors import LedgerError
from domain.ids import task_id
from domain.incident import (
    CancelTaskRequest,
    ConfirmPublishRequest,
    DecideRequest,
    DecideResult,
    DelegateRequest,
    DelegateResult,
    Draft,
    Incident,
    IncidentStatus,
    IncidentView,
    IncidentWorkflowState,
    KeepPostsPausedRequest,
    NodeState,
    ReassignRequest,
    Report,
    ResolveRequest,
    ResolveUnknownActionRequest,
    StartIncident,
    StatusUpdateRequest,
    StepProgress,
    SubmitDraftRequest,
    SubmitDraftResult,
    Task,
    TaskState,
    TimelineEntry,
    TimelineKind,
)
from domain.playbook import Approval, LibraryStatement, Playbook, Step
from domain.quorum import Outcome, Policy, Slot, Vote, evaluate, shortfall

MAX_ANSWERED = 1000  # remembered request ids (idempotent updates), oldest dropped first
COMMUNICATOR_ACCESS = frozenset({AccessRole.communicator, AccessRole.admin})
ADMIN_ACCESS = frozenset({AccessRole.admin})
APPROVER_ACCESS = frozenset({AccessRole.approver})
R = TypeVar("R", bound=BaseModel)


def policy_for(approval: Approval) -> Policy:
    veto = frozenset(approval.veto)
    if approval.require is not None:
        rules = tuple((r.role, r.min) for r in approval.require)
        return Policy("require", require=rules, veto=veto)
    if approval.quorum == "all":
        return Policy("all", veto=veto)
    if approval.quorum == "any" or approval.quorum is None:
        return Policy("any", veto=veto)
    return Policy("k", k=approval.quorum.k, veto=veto)


def describe_policy(policy: Policy) -> str:
    if policy.mode == "require":
        text = " AND ".join(f"{n} of {role}" for role, n in policy.require)
    elif policy.mode == "k":
        text = f"{policy.k} approvals"
    else:
        text = f"{policy.mode} approvers"
    if policy.veto:
        text += "; veto: " + ", ".join(sorted(policy.veto))
    return text


def fingerprint(payload: BaseModel) -> str:
    data = payload.model_dump(mode="json", exclude={"request_id"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def has_access(directory: Directory, person_id: str, allowed: frozenset[AccessRole]) -> bool:
    return directory.has_person(person_id) and bool(
        allowed & set(directory.person(person_id).access))


def eligible_voters(directory: Directory, role: str | None, for_person: str) -> list[Person]:
    """Who may carry a vote held for `role` by `for_person`: members of the role, members of
    the role's on-call roster, and deputies named for that person. All need the approver
    access role, or they could never see or decide the task."""
    ids: list[str] = []
    if role is not None:
        ids += [p.id for p in directory.members_of(role)]
        role_def = directory.role(role)
        if role_def is not None and role_def.oncall is not None:
            ids += directory.roster(role_def.oncall).members
    if directory.has_person(for_person):
        ids += list(directory.person(for_person).deputies)
    seen: set[str] = set()
    out = []
    for pid in ids:
        if pid not in seen and has_access(directory, pid, APPROVER_ACCESS):
            seen.add(pid)
            out.append(directory.person(pid))
    return out


def _receipts(receipts: list[ChannelReceipt] | None) -> list[dict[str, Any]] | None:
    if not receipts:
        return None
    return [r.model_dump(mode="json", exclude_none=True) for r in receipts]


class Ledger:
    def __init__(self, state: IncidentWorkflowState, playbook: Playbook,
                 directory: Directory) -> None:
        self.state = state
        self.playbook = playbook
        self.pinned_directory = directory  # the snapshot the incident started with
        self.directory = state.time_off.apply(directory) if state.time_off else directory
        self._changed_tasks: set[str] = set()
        self._changed_nodes: set[str] = set()
        self._incident_changed = True
        self._answered: list[str] = []  # request ids answered since the last batch
        # Behaviour added after incidents were already running; the workflow turns it on
        # only where `workflow.patched` says the history allows it.
        self.widen_quorum = False  # rejects that make quorum impossible add voters first
        self.widened: list[Task] = []
        self._reports_seen: set[str] = set()
        self._reports_seen_upto = 0
        self.tier_names_person = False  # a tier's `add_approvers: person` reaches them
        # one vote per person per round: no second task or delegated vote for someone who
        # already voted, and no tier firing into an approval that has ended
        self.one_vote_per_person = False
        # after an outage an overdue repeating tier or reminder fires once (noting how many
        # firings it stands for) and keeps its grid, instead of firing every missed slot
        self.catch_up_once = False
        # an on-call person who is away hands the shift to the next member of the rotation
        self.skip_away_on_call = False
        # with working hours ignored (`respect_working_hours: false`, a tier's named person),
        # someone away is still replaced by on-call; asked only when it changes the answer
        self.away_hands_over: Callable[[], bool] | None = None

    @classmethod
    def open(cls, start: StartIncident, at: datetime) -> Ledger:
        """A new incident, or (with `start.state`) the next run of a continued one."""
        playbook, directory = start.playbook.definition, start.directory.definition
        if start.state is not None:
            ledger = cls(start.state, playbook, directory)
            ledger.mark_all_changed()
            return ledger
        incident = Incident(
            id=start.incident_id, title=start.title, summary=start.summary,
            severity=start.severity, source_url=start.source_url, dedup_key=start.dedup_key,
            opened_by=start.opened_by, opened_at=at, playbook=start.playbook.ref())
        ledger = cls(IncidentWorkflowState(incident=incident, time_off=start.time_off),
                     playbook, directory)
        ledger.record(at, "opened", start.opened_by, title=start.title,
                      time_off_revision=start.time_off.revision if start.time_off else None,
                      severity=start.severity.value, source_url=start.source_url,
                      dedup_key=start.dedup_key, report_id=start.opening_report_id,
                      playbook_id=start.playbook.id, playbook_version=start.playbook.version,
                      playbook_sha256=start.playbook.sha256)
        return ledger

    # ---- reading -------------------------------------------------------------------

    @property
    def incident(self) -> Incident:
        return self.state.incident

    @property
    def is_open(self) -> bool:
        return self.state.incident.status == IncidentStatus.open

    def view(self) -> IncidentView:
        return IncidentView(incident=self.incident, tasks=list(self.state.tasks.values()),
                            nodes=list(self.state.nodes.values()))

    def node(self, step_id: str) -> NodeState | None:
        return self.state.nodes.get(step_id)

    def node_tasks(self, step_id: str) -> list[Task]:
        return [t for t in self.state.tasks.values() if t.node_id == step_id]

    def open_holders(self, step_id: str) -> list[str]:
        return [t.assignee for t in self.node_tasks(step_id) if t.state == TaskState.open]

    def slots(self, step_id: str) -> dict[str, Slot]:
        """Quorum slots: every task of the node's current round except those handed on or
        cancelled (votes on an older draft never count)."""
        vote = {TaskState.approved: Vote.approved, TaskState.rejected: Vote.rejected}
        node = self.state.nodes.get(step_id)
        current = node.round if node is not None else 1
        return {t.id: Slot(role=t.role, vote=vote.get(t.state, Vote.open))
                for t in self.node_tasks(step_id)
                if t.round == current
                and t.state in (TaskState.open, TaskState.approved, TaskState.rejected)}

    def _voters(self, step_id: str) -> set[str]:
        """Who holds, or already cast, a vote in the node's current round."""
        node = self.state.nodes.get(step_id)
        current = node.round if node is not None else 1
        return {t.assignee for t in self.node_tasks(step_id) if t.round == current
                and t.state in (TaskState.open, TaskState.approved, TaskState.rejected)}

    def round_tasks(self, step_id: str) -> list[Task]:
        node = self.state.nodes[step_id]
        return [t for t in self.node_tasks(step_id) if t.round == node.round]

    def drafts(self, step_id: str) -> list[Draft]:
        return self.state.drafts.get(step_id, [])

    def statement(self, step_id: str, template: str) -> str:
        """The text of an approval node as a template sees it: for a drafts node the
        approved draft (or, before approval, the latest one), else the playbook's text."""
        node = self.state.nodes.get(step_id)
        drafts = self.drafts(step_id)
        if node is not None and node.approved_sha256 is not None:
            return next(d.text for d in drafts if d.sha256 == node.approved_sha256)
        return drafts[-1].text if drafts else template

    def holder(self, task: Task) -> Task:
        """Follow delegations to the live task that now carries this vote."""
        seen = {task.id}
        while task.delegated_to is not None and task.delegated_to not in seen:
            task = self.state.tasks[task.delegated_to]
            seen.add(task.id)
        return task

    def approval_of(self, task: Task) -> Approval:
        approval = self.playbook.step(task.node_id).approval
        assert approval is not None, f"step {task.node_id} is not an approval"
        return approval

    def resolve(self, targets: list[Target], at: datetime,
                respect_hours: bool | None = None) -> list[Assignment]:
        """The people `targets` reach at `at` (off-hours people replaced by on-call)."""
        respect = self.playbook.defaults.respect_working_hours if respect_hours is None \
            else respect_hours
        return resolve_targets(targets, self.directory, at, respect_hours=respect,
                               skip_away_on_call=self.skip_away_on_call,
                               away_hands_over=self.away_hands_over)

    def assignments_of(self, tasks: list[Task]) -> list[Assignment]:
        """The assignments tasks were created from: how each holder was reached, unresolved
        again (an on-call stand-in stays `via: oncall, replaces: ...`)."""
        return [Assignment(person_id=t.assignee, role=t.role, via=cast(AssignedVia, t.via),
                           replaces=t.replaces) for t in tasks]

    # ---- timeline ------------------------------------------------------------------

    def record(self, at: datetime, kind: TimelineKind, actor: str, **details: Any) -> TimelineEntry:
        entry = TimelineEntry(seq=len(self.state.timeline) + 1, at=at, kind=kind, actor=actor,
                              details={k: v for k, v in details.items() if v is not None})
        self.state.timeline.append(entry)
        return entry

    # ---- idempotent commands -------------------------------------------------------

    def _first_answer(self, request: Any) -> Any | None:
        """The first result for this request id, or None; a different payload is a conflict."""
        seen = self.state.answered.get(request.request_id)
        if seen is None:
            return None
        if seen["fingerprint"] != fingerprint(request):
            raise LedgerError(errors.REQUEST_CONFLICT,
                              f"request id {request.request_id!r} was used for a different request")
        return seen["result"]

    def _once(self, request: Any, result_type: type[R], apply: Callable[[], R]) -> R:
        """Apply a command once per request id; a repeat returns the first result."""
        first = self._first_answer(request)
        if first is not None:
            return result_type.model_validate(first)
        result = apply()
        answered = self.state.answered
        answered[request.request_id] = {"fingerprint": fingerprint(request),
                                        "result": result.model_dump(mode="json")}
        while len(answered) > MAX_ANSWERED:
            del answered[next(iter(answered))]
        return result

    def _validate(self, request: Any, check: Callable[[], None]) -> None:
        """Validator twin of `_once`: a repeat of an answered request always passes."""
        if self._first_answer(request) is None:
            check()

    # ---- step progress -------------------------------------------------------------

    def progress(self, step_id: str, at: datetime) -> StepProgress:
        progress = self.state.progress.get(step_id)
        if progress is None:
            progress = StepProgress(started_at=at)
            self.state.progress[step_id] = progress
        return progress

    def finish_step(self, step_id: str) -> None:
        self.state.progress[step_id].status = "done"

    def set_outcome(self, step_id: str, outcome: str) -> None:
        self.state.progress[step_id].outcome = outcome

    def fire_reminder(self, step_id: str, due: datetime, missed: int = 0,
                      at: datetime | None = None) -> int:
        """Mark the reminder due at `due` as fired; returns its count since the start.
        `missed`: earlier slots that fell due while nothing could fire them (an outage);
        this firing stands for them, and the timeline says so (`catch_up`)."""
        progress = self.state.progress[step_id]
        progress.last_fired_at = due
        count = int((due - (progress.started_at or due)) / self.playbook.step(
            step_id).reminder.every)  # type: ignore[union-attr]
        if missed:
            self.record(at or due, "catch_up", "system", step=step_id, purpose="reminder",
                        firing=count, missed=missed, due_at=due.isoformat())
        return count

    def reminder_slot(self, step_id: str, at: datetime) -> tuple[datetime, int]:
        """The reminder's latest slot due at `at` on its grid (started_at + k * every), and
        how many slots since the last firing were missed (0 when it runs on time)."""
        progress = self.state.progress[step_id]
        every = self.playbook.step(step_id).reminder.every  # type: ignore[union-attr]
        start = progress.started_at or at
        latest = (at - start) // every
        fired = (progress.last_fired_at - start) // every if progress.last_fired_at else 0
        if latest <= fired:  # not due yet (the caller woke early): the next slot
            return start + (fired + 1) * every, 0
        return start + latest * every, latest - fired - 1

    # ---- reports, status, resolution -----------------------------------------------

    def has_report(self, report_id: str) -> bool:
        return report_id in self._report_ids()

    def _report_ids(self) -> set[str]:
        """Report ids already on the timeline (kept as a set, not a scan per report)."""
        if self._reports_seen_upto != len(self.state.timeline):
            for entry in self.state.timeline[self._reports_seen_upto:]:
                report_id = entry.details.get("report_id")
                if report_id is not None:
                    self._reports_seen.add(report_id)
            self._reports_seen_upto = len(self.state.timeline)
        return self._reports_seen

    def add_report(self, report: Report, at: datetime) -> bool:
        """Attach a report once per report id; False if it was already there."""
        self.require_open()
        if self.has_report(report.id):
            return False
        self.state.incident.reports += 1
        self._incident_changed = True
        self.record(at, "report_added", report.reported_by, report_id=report.id,
                    summary=report.summary, source_url=report.source_url,
                    severity=report.severity.value if report.severity else None,
                    reports=self.state.incident.reports)
        return True

    def require_open(self) -> None:
        if not self.is_open:
            raise LedgerError(errors.INCIDENT_CLOSED, f"incident {self.incident.id} is resolved")

    def _require_access(self, actor: str, allowed: frozenset[AccessRole], what: str) -> None:
        if not self.directory.has_person(actor):
            raise LedgerError(errors.FORBIDDEN, f"unknown person {actor!r}")
        if not has_access(self.directory, actor, allowed):
            raise LedgerError(errors.FORBIDDEN, f"only {what} may do this")

    def _check_communicator(self, actor: str) -> None:
        self._require_access(actor, COMMUNICATOR_ACCESS, "a communicator or an admin")
        self.require_open()

    def validate_status_update(self, req: StatusUpdateRequest) -> None:
        self._validate(req, lambda: self._check_communicator(req.actor))

    def post_status_update(self, req: StatusUpdateRequest, at: datetime) -> TimelineEntry:
        def apply() -> TimelineEntry:
            self._check_communicator(req.actor)
            return self.record(at, "status_update", req.actor, message=req.message)
        return self._once(req, TimelineEntry, apply)

    def validate_resolve(self, req: ResolveRequest) -> None:
        self._validate(req, lambda: self._check_communicator(req.actor))

    def resolve_incident(self, req: ResolveRequest, at: datetime) -> Incident:
        def apply() -> Incident:
            self._check_communicator(req.actor)
            for node in self.state.nodes.values():
                if node.outcome == Outcome.pending:
                    self.close_node(node.step_id, "cancelled", at, reason="incident resolved")
            incident = self.state.incident
            incident.status = IncidentStatus.resolved
            incident.resolved_at, incident.resolved_by = at, req.actor
            incident.resolution_summary = req.summary
            self._incident_changed = True
            self.record(at, "resolved", req.actor, summary=req.summary)
            return incident.model_copy()
        return self._once(req, Incident, apply)

    # ---- approval nodes ------------------------------------------------------------

    def open_approval(self, step_id: str, approval: Approval, at: datetime, *, title: str,
                      content: str) -> list[Task]:
        """Open the node with a task per approver (on-call standing in for off-hours
        people, topped up where that leaves a role short); end it at once if it can never
        be decided. Returns the tasks to notify (none if the node already ended)."""
        deadline = at + (approval.deadline or self.playbook.defaults.approval_deadline)
        node = NodeState(step_id=step_id, title=title,
                         policy=describe_policy(policy_for(approval)), opened_at=at,
                         deadline=deadline, tiers_fired=[0] * len(approval.escalation))
        self.state.nodes[step_id] = node
        self._changed_nodes.add(step_id)
        if approval.drafts is not None:
            node.round_started_at = at
            drafts = self.drafts(step_id)
            if not drafts and approval.drafts.start_from_template and content.strip():
                drafts = [self._template_draft(step_id, content, at)]
            if not drafts:
                node.awaiting_draft = True
                self.record(at, "awaiting_draft", "playbook", node=step_id, round=1,
                            submitters=list(approval.drafts.submitters))
                return []
            return self._first_round(step_id, approval, drafts[-1], at)
        tasks = self._add_tasks(step_id, self.resolve(approval.approvers, at), title=title,
                                content=content, at=at, deadline=deadline)
        tasks += self._top_up(step_id, approval, title=title, content=content, at=at,
                              deadline=deadline)
        outcome = self.evaluate(step_id, approval)
        if outcome != Outcome.pending:
            self.close_node(step_id, outcome, at, reason="not enough approvers")
            return []
        return tasks

    def _template_draft(self, step_id: str, text: str, at: datetime) -> Draft:
        """Draft v1 from the playbook's suggested text, so round 1 starts at once."""
        draft = Draft(node_id=step_id, version=1, text=text,
                      sha256=hashlib.sha256(text.encode()).hexdigest(), author="playbook",
                      submitted_at=at)
        self.state.drafts.setdefault(step_id, []).append(draft)
        self.record(at, "draft_submitted", "playbook", node=step_id, version=1,
                    sha256=draft.sha256, text=text, template=True)
        return draft

    def _first_round(self, step_id: str, approval: Approval, draft: Draft,
                     at: datetime) -> list[Task]:
        node = self.state.nodes[step_id]
        node.draft_version, node.awaiting_draft = draft.version, False
        node.policy = self._policy_text(step_id, approval)
        approvers = self.effective_approval(step_id, approval).approvers
        tasks = self._add_tasks(step_id, self.resolve(approvers, at), title=node.title,
                                content=draft.text, at=at, deadline=node.deadline, draft=draft)
        tasks += self._top_up(step_id, approval, title=node.title, content=draft.text, at=at,
                              deadline=node.deadline, draft=draft)
        outcome = self.evaluate(step_id, approval)
        if outcome != Outcome.pending:
            self.close_node(step_id, outcome, at, reason="not enough approvers")
            return []
        return tasks

    def _drafts_rules(self, node_id: str) -> Approval:
        try:
            approval = self.playbook.step(node_id).approval
        except StopIteration:
            approval = None
        if approval is None or approval.drafts is None:
            raise LedgerError(errors.DRAFT_REFUSED,
                              f"step {node_id!r} is not an approval that takes drafts")
        return approval

    def _check_draft(self, req: SubmitDraftRequest) -> Approval:
        approval = self._drafts_rules(req.node_id)
        assert approval.drafts is not None
        allowed = frozenset(AccessRole(a) for a in approval.drafts.submitters)
        self._require_access(req.actor, allowed, " or ".join(approval.drafts.submitters))
        self.require_open()
        node = self.state.nodes.get(req.node_id)
        if node is not None and node.outcome != Outcome.pending:
            raise LedgerError(errors.DRAFT_REFUSED,
                              f"approval {req.node_id} has ended ({node.outcome})")
        if len(self.drafts(req.node_id)) >= approval.drafts.max_rounds:
            raise LedgerError(errors.DRAFT_REFUSED,
                              f"approval {req.node_id} allows {approval.drafts.max_rounds} "
                              "drafts at most")
        self._library_statement(req, approval)
        return approval

    def _library_statement(self, req: SubmitDraftRequest, approval: Approval
                           ) -> LibraryStatement | None:
        """The pre-approved statement a draft asks to use, checked byte for byte: only an
        exact copy may be decided under the lighter library policy."""
        if req.library is None:
            if req.library_version is not None:
                raise LedgerError(errors.LIBRARY_MISMATCH,
                                  "`library_version` needs `library` (the statement id)")
            return None
        assert approval.drafts is not None
        if not approval.drafts.library:
            raise LedgerError(errors.LIBRARY_MISMATCH,
                              f"approval {req.node_id} has no library of pre-approved "
                              "statements")
        statement = approval.drafts.statement(req.library, req.library_version)
        if statement is None:
            known = ", ".join(s.ref for s in approval.drafts.library)
            which = f"{req.library}@v{req.library_version}" if req.library_version \
                else req.library
            raise LedgerError(errors.LIBRARY_MISMATCH,
                              f"no library statement {which} (the library has {known})")
        if req.text != statement.text:
            raise LedgerError(
                errors.LIBRARY_MISMATCH,
                f"the text is not byte-identical to library statement {statement.ref} "
                f"(sha256 {statement.sha256[:12]}, "
                f"{hashlib.sha256(req.text.encode()).hexdigest()[:12]} given): only the exact "
                "pre-approved wording may use the lighter policy; submit an edited text "
                "without `library` for the full approval")
        return statement

    def _round_draft(self, step_id: str) -> Draft | None:
        """The draft the node's current (or last) round decides, awaiting a redraft or not."""
        node = self.state.nodes.get(step_id)
        if node is None or node.draft_version is None:
            return None
        return next((d for d in self.drafts(step_id) if d.version == node.draft_version), None)

    def effective_approval(self, step_id: str, approval: Approval) -> Approval:
        """The node's approval as its current round decides it: a round on a library
        statement is decided by the library policy's approvers and quorum, without veto."""
        draft = self._round_draft(step_id)
        library = approval.drafts.library_policy if approval.drafts is not None else None
        if draft is None or draft.library_id is None or library is None:
            return approval
        return approval.model_copy(update={
            "approvers": library.approvers, "quorum": library.quorum,
            "require": library.require, "veto": []})

    def _policy_text(self, step_id: str, approval: Approval) -> str:
        text = describe_policy(policy_for(self.effective_approval(step_id, approval)))
        draft = self._round_draft(step_id)
        if draft is not None and draft.library_id is not None:
            text += f" (pre-approved library statement {draft.library_id}@v" \
                    f"{draft.library_version})"
        return text

    def validate_draft(self, req: SubmitDraftRequest) -> None:
        def check() -> None:
            self._check_draft(req)
        self._validate(req, check)

    def submit_draft(self, req: SubmitDraftRequest, at: datetime) -> SubmitDraftResult:
        """A new version of the node's statement. If the node is open, a new round starts:
        the old round's open tasks are cancelled and the same approvers get new tasks bound
        to this version's sha256."""
        def apply() -> SubmitDraftResult:
            approval = self._check_draft(req)
            statement = self._library_statement(req, approval)
            previous = self.drafts(req.node_id)
            draft = Draft(node_id=req.node_id, version=len(previous) + 1, text=req.text,
                          sha256=hashlib.sha256(req.text.encode()).hexdigest(),
                          author=req.actor, submitted_at=at, channels=req.channels,
                          link=req.link, library_id=statement.id if statement else None,
                          library_version=statement.version if statement else None)
            self.state.drafts.setdefault(req.node_id, []).append(draft)
            self.record(at, "draft_submitted", req.actor, node=req.node_id,
                        version=draft.version, sha256=draft.sha256, text=draft.text,
                        channels=draft.channels or None, link=draft.link,
                        previous_sha256=previous[-1].sha256 if previous else None,
                        library=statement.id if statement else None,
                        library_version=statement.version if statement else None,
                        library_approved_by=statement.approved_by if statement else None,
                        library_approved_on=str(statement.approved_on) if statement else None)
            node = self.state.nodes.get(req.node_id)
            if node is None:
                return SubmitDraftResult(draft=draft)
            tasks = (self._first_round(req.node_id, approval, draft, at)
                     if node.draft_version is None
                     else self._next_round(req.node_id, approval, draft, at))
            return SubmitDraftResult(draft=draft, node=node.model_copy(),
                                     tasks=[t.model_copy() for t in tasks])
        return self._once(req, SubmitDraftResult, apply)

    def _next_round(self, step_id: str, approval: Approval, draft: Draft,
                    at: datetime) -> list[Task]:
        assert approval.drafts is not None
        node = self.state.nodes[step_id]
        previous = self.round_tasks(step_id)
        for task in previous:
            if task.state == TaskState.open:
                self._set_task_state(task, TaskState.cancelled)
                self.record(at, "task_cancelled", "system", task_id=task.id,
                            assignee=task.assignee, node=step_id,
                            reason=f"superseded by draft v{draft.version}")
        # the same approvers: whoever carried each vote (delegates included), except
        # votes an admin cancelled
        voters = [t for t in previous if t.state != TaskState.delegated
                  and not (t.state == TaskState.cancelled and t.decided_by is not None)]
        before = self.effective_approval(step_id, approval)
        node.round += 1
        node.draft_version, node.awaiting_draft, node.round_started_at = (
            draft.version, False, at)
        after = self.effective_approval(step_id, approval)
        node.policy = self._policy_text(step_id, approval)
        # a round that moves between the node's policy and the library policy asks the
        # approvers of its own policy
        assignments = self.assignments_of(voters) if after.approvers == before.approvers \
            else self.resolve(after.approvers, at)
        if approval.drafts.escalation_clock == "restart":
            node.tiers_fired = [0] * len(approval.escalation)
            node.deadline = at + (approval.deadline or self.playbook.defaults.approval_deadline)
        self._changed_nodes.add(step_id)
        tasks = self._add_tasks(step_id, assignments, title=node.title,
                                content=draft.text, at=at, deadline=node.deadline,
                                draft=draft, reason=f"round {node.round}: draft v{draft.version}")
        outcome = self.evaluate(step_id, approval)
        if outcome != Outcome.pending:
            self._end_round(step_id, outcome, at, reason="not enough approvers")
        return tasks

    def _end_round(self, step_id: str, outcome: Outcome, at: datetime, reason: str) -> None:
        """A drafts node's round that was rejected or vetoed: close it, wait for a redraft."""
        node = self.state.nodes[step_id]
        for task in self.round_tasks(step_id):
            if task.state == TaskState.open:
                self._set_task_state(task, TaskState.cancelled)
                self.record(at, "task_cancelled", "system", task_id=task.id,
                            assignee=task.assignee, node=step_id,
                            reason=f"round {node.round} ended {outcome}")
        node.awaiting_draft = True
        self._changed_nodes.add(step_id)
        slots = self.slots(step_id)
        self.record(at, "round_outcome", "system", node=step_id, round=node.round,
                    version=node.draft_version, outcome=str(outcome), reason=reason,
                    approved=[t for t, v in slots.items() if v.vote is Vote.approved],
                    rejected=[t for t, v in slots.items() if v.vote is Vote.rejected])
        self.record(at, "awaiting_draft", "system", node=step_id, round=node.round + 1)

    def _top_up(self, step_id: str, approval: Approval, *, title: str, content: str,
                at: datetime, deadline: datetime | None, draft: Draft | None = None,
                reason: str = "needed for quorum although outside working hours"
                ) -> list[Task]:
        """If off-hours substitution left a role too few voters, add off-hours members back:
        a vote they might give beats a node that can never be decided."""
        created = []
        approval = self.effective_approval(step_id, approval)
        for role, missing in shortfall(policy_for(approval), self.slots(step_id)).items():
            holders = {t.assignee for t in self.node_tasks(step_id)
                       if t.round == self.state.nodes[step_id].round}
            pool = [Assignment(person_id=p.id, role=role, via="role")
                    for target in approval.approvers
                    for p in self._people_of(target, role) if p.id not in holders]
            created += self._add_tasks(
                step_id, pool[:missing], title=title, content=content, at=at,
                deadline=deadline, reason=reason, draft=draft)
        return created

    def _people_of(self, target: Target, role: str | None) -> list[Person]:
        if target.role is not None and role in (None, target.role):
            return self.directory.members_of(target.role)
        if target.person is not None:
            person = self.directory.person(target.person)
            return [person] if role is None or role in person.roles else []
        return []

    def _add_tasks(self, step_id: str, assignments: list[Assignment], *, title: str,
                   content: str, at: datetime, deadline: datetime | None,
                   actor: str = "playbook", reason: str | None = None,
                   draft: Draft | None = None) -> list[Task]:
        """One open task per assignment, skipping people who already hold one in the node
        (and, with `one_vote_per_person`, anyone who already voted in its current round)."""
        holding = set(self.open_holders(step_id))
        if self.one_vote_per_person:
            holding |= self._voters(step_id)
        created = []
        for assignment in assignments:
            if assignment.person_id in holding:
                continue
            holding.add(assignment.person_id)
            task = self._new_task(step_id, assignee=assignment.person_id, role=assignment.role,
                                  via=assignment.via, replaces=assignment.replaces, title=title,
                                  content=content, at=at, deadline=deadline, draft=draft)
            created.append(task)
            self.record(at, "task_created", actor, task_id=task.id, node=step_id,
                        assignee=task.assignee, role=task.role, via=task.via,
                        replaces=task.replaces, reason=reason,
                        round=task.round if draft is not None else None,
                        draft_version=task.draft_version)
        return created

    def _new_task(self, step_id: str, *, assignee: str, role: str | None, via: str,
                  title: str, content: str, at: datetime, deadline: datetime | None,
                  replaces: str | None = None, delegated_from: str | None = None,
                  draft: Draft | None = None, round_: int | None = None) -> Task:
        node = self.state.nodes.get(step_id)
        task = Task(id=task_id(self.incident.id, step_id, len(self.node_tasks(step_id)) + 1),
                    incident_id=self.incident.id, node_id=step_id, title=title, content=content,
                    assignee=assignee, role=role, via=via, replaces=replaces, created_at=at,
                    deadline=deadline, delegated_from=delegated_from,
                    round=round_ or (node.round if node is not None else 1),
                    draft_version=draft.version if draft else None,
                    draft_sha256=draft.sha256 if draft else None)
        self.state.tasks[task.id] = task
        self._changed_tasks.add(task.id)
        return task

    def evaluate(self, step_id: str, approval: Approval) -> Outcome:
        return evaluate(policy_for(self.effective_approval(step_id, approval)),
                        self.slots(step_id))

    def next_tier(self, step_id: str, approval: Approval) -> tuple[int | None, datetime | None]:
        """The escalation tier that fires next, and when (None, None when none is left)."""
        node = self.state.nodes[step_id]
        best: tuple[int | None, datetime | None] = (None, None)
        for index, tier in enumerate(approval.escalation):
            count = node.tiers_fired[index] if index < len(node.tiers_fired) else 0
            if count > tier.repeat:
                continue
            at = self._clock_start(step_id, approval) + tier.after + count * (
                tier.every or tier.after)
            if best[1] is None or at < best[1]:
                best = (index, at)
        return best

    def _clock_start(self, step_id: str, approval: Approval) -> datetime:
        node = self.state.nodes[step_id]
        if approval.drafts is not None and approval.drafts.escalation_clock == "restart" \
                and node.round_started_at is not None:
            return node.round_started_at
        return node.opened_at

    def tier_slots_due(self, step_id: str, approval: Approval, index: int,
                       at: datetime) -> int:
        """How many firings of tier `index` are due at `at`: 1 when it runs on time, more
        after an outage (slots on its grid after + k * every, at most `repeat` + 1 in all)."""
        node = self.state.nodes[step_id]
        tier = approval.escalation[index]
        count = node.tiers_fired[index] if index < len(node.tiers_fired) else 0
        first = self._clock_start(step_id, approval) + tier.after
        if at < first:
            return 1
        latest = min((at - first) // (tier.every or tier.after), tier.repeat)
        return max(1, latest - count + 1)

    def fire_tier(self, step_id: str, approval: Approval, index: int, at: datetime, *,
                  title: str, content: str, slots: int = 1) -> tuple[int, list[str], list[Task]]:
        """Record a firing of escalation tier `index`; add its approvers. Returns the
        firing count, who the node was waiting on, and the tasks added. `slots` > 1: this
        one firing stands for that many due slots (after an outage), recorded as
        `missed: slots - 1`; the next firing is the next slot on the tier's grid."""
        tier = approval.escalation[index]
        node = self.state.nodes[step_id]
        if self.one_vote_per_person and node.outcome != Outcome.pending:
            return 0, [], []  # the approval ended in the same moment: nobody to ask
        while len(node.tiers_fired) <= index:
            node.tiers_fired.append(0)
        node.tiers_fired[index] += max(1, slots)
        self._changed_nodes.add(step_id)
        firing = node.tiers_fired[index]
        waiting = self.open_holders(step_id)
        self.record(at, "escalation", "playbook", node=step_id, tier=index + 1,
                    name=tier.name, firing=firing,
                    notify=[t.label() for t in tier.notify],
                    add_approvers=[t.label() for t in tier.add_approvers],
                    waiting_on=waiting, missed=slots - 1 if slots > 1 else None)
        added: list[Task] = []
        if tier.add_approvers:
            assignments = self.resolve(tier.add_approvers, at)
            if self.tier_names_person:
                # a tier that names a person means that person, even off-hours and even if
                # the on-call stand-in who covers them already holds a task
                named = [t for t in tier.add_approvers if t.person is not None]
                direct = self.resolve(named, at, respect_hours=False)
                others = self.resolve([t for t in tier.add_approvers if t.person is None], at)
                assignments = [*direct, *[a for a in others if a.person_id not in
                                          {d.person_id for d in direct}]]
            draft = self._current_draft(step_id)
            added = self._add_tasks(step_id, assignments, title=title,
                                    content=draft.text if draft else content, at=at,
                                    deadline=node.deadline, draft=draft,
                                    reason=f"escalation tier {index + 1}")
        return firing, waiting, added

    def _current_draft(self, step_id: str) -> Draft | None:
        node = self.state.nodes[step_id]
        if node.draft_version is None or node.awaiting_draft:
            return None
        return next(d for d in self.drafts(step_id) if d.version == node.draft_version)

    def expire_node(self, step_id: str, at: datetime) -> None:
        self.close_node(step_id, Outcome.expired, at, reason="deadline passed without quorum")

    def close_node(self, step_id: str, outcome: Outcome | str, at: datetime,
                   reason: str | None = None) -> None:
        """End a node: record its outcome, cancel (or expire) every task still open."""
        node = self.state.nodes[step_id]
        if node.outcome != Outcome.pending:
            return
        node.outcome = outcome  # type: ignore[assignment]
        node.ended_at = at
        self._changed_nodes.add(step_id)
        left = TaskState.expired if outcome == Outcome.expired else TaskState.cancelled
        for task in self.node_tasks(step_id):
            if task.state == TaskState.open:
                self._set_task_state(task, left)
                self.record(at, "task_expired" if left == TaskState.expired else "task_cancelled",
                            "system", task_id=task.id, assignee=task.assignee, node=step_id)
        slots = self.slots(step_id)
        self.record(at, "node_outcome", "system", node=step_id, outcome=str(outcome),
                    reason=reason, policy=node.policy,
                    round=node.round if node.draft_version is not None else None,
                    draft_version=node.draft_version, approved_sha256=node.approved_sha256,
                    approved=[t for t, s in slots.items() if s.vote is Vote.approved],
                    rejected=[t for t, s in slots.items() if s.vote is Vote.rejected])

    def _set_task_state(self, task: Task, state: TaskState) -> None:
        task.state = state
        task.rev += 1
        self._changed_tasks.add(task.id)

    # ---- deliveries and actions ----------------------------------------------------

    def record_delivery(self, *, at: datetime, step_id: str, kind: str, assignment: Assignment,
                        channels: list[str], skipped: dict[str, str] | None,
                        receipts: list[ChannelReceipt] | None = None) -> None:
        self.record(at, "reminder" if kind == "reminder" else "notified", "system",
                    step=step_id, to=assignment.person_id, purpose=kind, channels=channels,
                    skipped=skipped or None, via=assignment.via, replaces=assignment.replaces,
                    receipts=_receipts(receipts))
        self._note_delivery(step_id, assignment.person_id, kind, receipts)

    def record_delivery_failure(self, *, at: datetime, step_id: str, kind: str,
                                person_id: str, error: str,
                                receipts: list[ChannelReceipt] | None = None) -> None:
        self.record(at, "notification_failed", "system", step=step_id, to=person_id,
                    purpose=kind, error=error, receipts=_receipts(receipts))
        self._note_delivery(step_id, person_id, kind, receipts)

    def record_delivery_delayed(self, *, at: datetime, step_id: str, kind: str,
                                person_id: str, error: str, infrastructure: bool) -> None:
        self.record(at, "notification_delayed", "system", step=step_id, to=person_id,
                    purpose=kind, error=error,
                    cause="our infrastructure is unavailable" if infrastructure
                    else "the channel asked us to retry later")

    def _note_delivery(self, step_id: str, person_id: str, kind: str,
                       receipts: list[ChannelReceipt] | None) -> None:
        """Per-channel receipts also land on the person's open task in the node."""
        if kind != "task" or not receipts:
            return
        for task in self.node_tasks(step_id):
            if task.assignee == person_id and task.state == TaskState.open:
                task.deliveries = _receipts(receipts) or []
                task.rev += 1
                self._changed_tasks.add(task.id)

    def stand_in_for_unreachable(self, task_id_: str, at: datetime) -> list[Task]:
        """Every channel failed for a task's holder: like someone outside working hours,
        the role's on-call stand-in gets a task at once (their own stays open)."""
        task = self.state.tasks.get(task_id_)
        node = self.state.nodes.get(task.node_id) if task is not None else None
        if task is None or node is None or node.outcome != Outcome.pending \
                or task.state != TaskState.open or task.role is None:
            return []
        role = self.directory.role(task.role)
        if role is None or role.oncall is None:
            return []
        stand_in = self.directory.on_call(role.oncall, at, skip_away=self.skip_away_on_call)
        if stand_in == task.assignee or stand_in in self.open_holders(task.node_id):
            return []
        assignment = Assignment(person_id=stand_in, role=task.role, via="oncall",
                                replaces=task.assignee)
        return self._add_tasks(task.node_id, [assignment], title=task.title,
                               content=task.content, at=at, deadline=task.deadline,
                               draft=self._current_draft(task.node_id), actor="system",
                               reason=f"{task.assignee} is unreachable: every channel failed")

    def record_action(self, *, at: datetime, step_id: str, url: str,
                      status_code: int | None = None, error: str | None = None,
                      published: Draft | None = None) -> None:
        if error is None:
            self.set_outcome(step_id, "done")
            self.record(at, "action_run", "system", step=step_id, url=url,
                        status_code=status_code,
                        published_sha256=published.sha256 if published else None,
                        published_version=published.version if published else None)
        else:
            self.record(at, "action_failed", "system", step=step_id, url=url, error=error)
            self.set_outcome(step_id, "failed")

    # ---- at-most-once actions -------------------------------------------------------
    # Progress outcome of such a step: "sending" (recorded before each call), then "done",
    # "failed", or "unknown" (the call may have reached the receiver without an answer);
    # a communicator turns "unknown" into "done" ("it was sent") or "resend".

    def action_sending(self, step_id: str, at: datetime, *, url: str, attempt: int,
                       idempotency_key: str) -> None:
        """About to call an at-most-once action: recorded before the call is made."""
        self.set_outcome(step_id, "sending")
        self.record(at, "action_sending", "system", step=step_id, url=url, attempt=attempt,
                    idempotency_key=idempotency_key)

    def action_outcome_unknown(self, step_id: str, at: datetime, *, url: str,
                               error: str) -> TimelineEntry:
        """The call may have reached the receiver without an answer: never resent; a
        human says what happened."""
        self.set_outcome(step_id, "unknown")
        return self.record(at, "action_outcome_unknown", "system", step=step_id, url=url,
                           error=error, ask="Did it reach the receiver? A communicator "
                           "answers 'it was sent' or 'send it again'.")

    def action_state(self, step_id: str) -> str | None:
        progress = self.state.progress.get(step_id)
        return progress.outcome if progress is not None else None

    def _check_unknown_action(self, req: ResolveUnknownActionRequest) -> None:
        self._check_communicator(req.actor)
        try:
            step = self.playbook.step(req.step_id)
        except StopIteration:
            step = None
        if step is None or step.action is None or not step.action.at_most_once:
            raise LedgerError(errors.NOTHING_TO_RESOLVE,
                              f"step {req.step_id!r} is not an at-most-once action")
        if self.action_state(req.step_id) != "unknown":
            raise LedgerError(errors.NOTHING_TO_RESOLVE,
                              f"the outcome of action {req.step_id} is not unknown "
                              f"({self.action_state(req.step_id) or 'not started'})")

    def validate_resolve_unknown(self, req: ResolveUnknownActionRequest) -> None:
        self._validate(req, lambda: self._check_unknown_action(req))

    def resolve_unknown(self, req: ResolveUnknownActionRequest, at: datetime) -> TimelineEntry:
        """A communicator's answer: `sent` ends the step as done; `resend` lets the
        workflow send it once more (again recorded "sending" first)."""
        def apply() -> TimelineEntry:
            self._check_unknown_action(req)
            self.set_outcome(req.step_id, "done" if req.outcome == "sent" else "resend")
            return self.record(at, "action_outcome_resolved", req.actor, step=req.step_id,
                               resolution=req.outcome, comment=req.comment or None)
        return self._once(req, TimelineEntry, apply)

    # ---- publishing an approved draft ---------------------------------------------

    def publication(self, approval_step: str) -> Draft:
        """The exact approved draft an action publishes; its text is hashed again here, so
        what is sent is what was approved."""
        node = self.state.nodes.get(approval_step)
        if node is None or node.outcome != Outcome.approved or node.approved_sha256 is None:
            raise LedgerError(errors.DRAFT_REFUSED, f"approval {approval_step} approved no draft")
        draft = next((d for d in self.drafts(approval_step)
                      if d.sha256 == node.approved_sha256), None)
        if draft is None or hashlib.sha256(draft.text.encode()).hexdigest() != draft.sha256:
            raise LedgerError(errors.DRAFT_CHANGED,
                              f"the text of approval {approval_step} no longer matches the "
                              "approved sha256")
        return draft

    def await_confirmation(self, step_id: str, draft: Draft, at: datetime) -> None:
        if not any(e.kind == "awaiting_publish_confirmation" and e.details.get("step") == step_id
                   for e in self.state.timeline):
            self.record(at, "awaiting_publish_confirmation", "playbook", step=step_id,
                        version=draft.version, sha256=draft.sha256, author=draft.author)

    def is_confirmed(self, step_id: str) -> bool:
        progress = self.state.progress.get(step_id)
        return progress is not None and progress.confirmed_by is not None

    def _check_confirmation(self, req: ConfirmPublishRequest) -> Draft:
        self._check_communicator(req.actor)
        try:
            step = self.playbook.step(req.step_id)
        except StopIteration:
            step = None
        action = step.action if step is not None else None
        if action is None or action.confirm != "two_person" or action.publishes is None:
            raise LedgerError(errors.NOT_AWAITING_CONFIRMATION,
                              f"step {req.step_id!r} is not a two-person publish")
        progress = self.state.progress.get(req.step_id)
        if progress is None or progress.confirmed_by is not None or progress.status == "done":
            raise LedgerError(errors.NOT_AWAITING_CONFIRMATION,
                              f"the publish {req.step_id} is not waiting for a confirmation")
        draft = self.publication(action.publishes)
        if req.actor == draft.author:
            raise LedgerError(errors.FORBIDDEN,
                              f"{req.actor} wrote draft v{draft.version}: a second person "
                              "must confirm its publish")
        return draft

    def validate_confirm_publish(self, req: ConfirmPublishRequest) -> None:
        def check() -> None:
            self._check_confirmation(req)
        self._validate(req, check)

    def confirm_publish(self, req: ConfirmPublishRequest, at: datetime) -> TimelineEntry:
        def apply() -> TimelineEntry:
            draft = self._check_confirmation(req)
            self.state.progress[req.step_id].confirmed_by = req.actor
            return self.record(at, "publish_confirmed", req.actor, step=req.step_id,
                               version=draft.version, sha256=draft.sha256, author=draft.author)
        return self._once(req, TimelineEntry, apply)

    # ---- time off: the live overlay on the pinned directory --------------------------

    def apply_time_off(self, overlay: TimeOff, at: datetime) -> bool:
        """Take a newer revision of the time-off overlay; from now on assignments resolve
        with it (tasks already created stay). False for an old or repeated revision."""
        current = self.state.time_off.revision if self.state.time_off else 0
        if overlay.revision <= current or not self.is_open:
            return False
        self.state.time_off = overlay
        self.directory = overlay.apply(self.pinned_directory)
        latest = overlay.changes[-1] if overlay.changes else None
        self.record(at, "time_off_applied", latest.actor if latest else "system",
                    revision=overlay.revision, change=latest.what if latest else None,
                    changed_at=latest.at.isoformat() if latest else None)
        return True

    # ---- scheduled posts paused for the incident ------------------------------------

    def pause_steps(self) -> list[Step]:
        """Actions that pause something (scheduled posts) until the incident resolves."""
        return [step for _, step in self.playbook.walk()
                if step.action is not None and step.action.resume_on_resolve is not None]

    def note_pause(self, step_id: str, at: datetime) -> None:
        """After a pausing action ran: on success, the timeline says posts are paused and
        will resume on resolution."""
        progress = self.state.progress.get(step_id)
        if progress is not None and progress.outcome == "done":
            self.record(at, "posts_paused", "system", step=step_id,
                        resumes="on resolution unless kept paused")

    def to_resume(self) -> list[Step]:
        """Pausing steps whose pause succeeded and that have not been resumed (or skipped)."""
        paused = set(paused_post_steps(self.state.timeline))
        return [step for step in self.pause_steps() if step.id in paused]

    def kept_paused(self) -> TimelineEntry | None:
        """The latest 'keep posts paused' request if it still holds (`keep: false` undoes)."""
        return kept_paused_request(self.state.timeline)

    def _check_keep_paused(self, req: KeepPostsPausedRequest) -> None:
        self._check_communicator(req.actor)
        if not self.pause_steps():
            raise LedgerError(errors.NO_PAUSED_POSTS,
                              f"playbook {self.playbook.id} v{self.playbook.version} pauses "
                              "nothing: there are no scheduled posts to keep paused")

    def validate_keep_posts_paused(self, req: KeepPostsPausedRequest) -> None:
        self._validate(req, lambda: self._check_keep_paused(req))

    def keep_posts_paused(self, req: KeepPostsPausedRequest, at: datetime) -> TimelineEntry:
        def apply() -> TimelineEntry:
            self._check_keep_paused(req)
            return self.record(at, "posts_kept_paused", req.actor, keep=req.keep,
                               reason=req.reason,
                               steps=[s.id for s in self.pause_steps()])
        return self._once(req, TimelineEntry, apply)

    def record_posts_resume(self, at: datetime, step_id: str, url: str, *,
                            status_code: int | None = None, error: str | None = None,
                            skipped: TimelineEntry | None = None) -> None:
        if skipped is not None:
            self.record(at, "posts_resume_skipped", "system", step=step_id,
                        kept_by=skipped.actor, reason=skipped.details.get("reason"))
        elif error is None:
            self.record(at, "posts_resumed", "system", step=step_id, url=url,
                        status_code=status_code)
        else:
            self.record(at, "posts_resume_failed", "system", step=step_id, url=url,
                        error=error)

    # ---- decisions and delegation --------------------------------------------------

    def _live_task_for(self, task_id_: str, actor: str) -> Task:
        task = self.state.tasks.get(task_id_)
        if task is None:
            raise LedgerError(errors.TASK_NOT_FOUND, f"no task {task_id_!r}")
        live = self.holder(task)
        if actor != live.assignee:
            if actor == task.assignee and task.state == TaskState.delegated:
                raise LedgerError(errors.TASK_CLOSED,
                                  f"task {task.id} was delegated to {live.assignee}")
            raise LedgerError(errors.NOT_YOUR_TASK, f"task {task.id} is not assigned to {actor}")
        return self._require_decidable(live)

    def _require_decidable(self, live: Task) -> Task:
        self.require_open()
        if live.state != TaskState.open:
            raise LedgerError(errors.TASK_CLOSED, f"task {live.id} is {live.state.value}")
        node = self.state.nodes.get(live.node_id)
        if node is None or node.outcome != Outcome.pending:
            raise LedgerError(errors.TASK_CLOSED, f"approval {live.node_id} has ended")
        return live

    def _admin_task(self, task_id_: str, actor: str) -> Task:
        self._require_access(actor, ADMIN_ACCESS, "an admin")
        task = self.state.tasks.get(task_id_)
        if task is None:
            raise LedgerError(errors.TASK_NOT_FOUND, f"no task {task_id_!r}")
        return self._require_decidable(self.holder(task))

    def _decidable(self, req: DecideRequest) -> Task:
        task = self._live_task_for(req.task_id, req.actor)
        if task.draft_sha256 is not None:
            if req.draft_sha256 is not None and req.draft_sha256 != task.draft_sha256:
                raise LedgerError(errors.DRAFT_CHANGED,
                                  f"task {task.id} decides draft v{task.draft_version} "
                                  f"({task.draft_sha256[:12]}), not {req.draft_sha256[:12]}")
            if req.decision == "reject" and not req.comment.strip():
                raise LedgerError(errors.REASON_REQUIRED,
                                  "a reject of a draft needs a reason (comment) for the redraft")
        return task

    def validate_decision(self, req: DecideRequest) -> None:
        def check() -> None:
            self._decidable(req)
        self._validate(req, check)

    def decide(self, req: DecideRequest, at: datetime) -> DecideResult:
        """Apply a vote; end the node at once if it is now approved, rejected or vetoed."""
        def apply() -> DecideResult:
            task = self._decidable(req)
            self._set_task_state(task, TaskState.approved if req.decision == "approve"
                                 else TaskState.rejected)
            task.decided_at, task.decided_by, task.comment = at, req.actor, req.comment or None
            self.record(at, "decision", req.actor, task_id=task.id, node=task.node_id,
                        decision=req.decision, comment=req.comment or None, role=task.role,
                        draft_version=task.draft_version, draft_sha256=task.draft_sha256)
            self._settle(task.node_id, at, reason=f"{req.decision} by {req.actor}")
            return DecideResult(task=task.model_copy(),
                                node=self.state.nodes[task.node_id].model_copy())
        return self._once(req, DecideResult, apply)

    def _settle(self, step_id: str, at: datetime, reason: str) -> None:
        approval = self.playbook.step(step_id).approval
        assert approval is not None
        outcome = self.evaluate(step_id, approval)
        if outcome == Outcome.rejected and self.widen_quorum:
            outcome = self._widen(step_id, approval, at)
        if outcome == Outcome.pending:
            return
        node = self.state.nodes[step_id]
        if approval.drafts is not None and outcome != Outcome.approved:
            self._end_round(step_id, outcome, at, reason=reason)
            return
        if approval.drafts is not None:
            approved = self._current_draft(step_id)
            assert approved is not None, "a drafts round is decided only on a draft"
            node.approved_sha256 = approved.sha256
        self.close_node(step_id, outcome, at, reason=reason)

    def _widen(self, step_id: str, approval: Approval, at: datetime) -> Outcome:
        """Rejects made the quorum impossible among the current voters: before ending the
        node, ask the role's other members (those left out as off-hours) if there are any.
        A veto never gets here: it ends the node at once."""
        node = self.state.nodes[step_id]
        draft = self._current_draft(step_id)
        added = self._top_up(step_id, approval, title=node.title,
                             content=draft.text if draft else self._task_text(step_id),
                             at=at, deadline=node.deadline, draft=draft,
                             reason="rejects made the quorum impossible among the current "
                                    "voters; widened to the role's other members")
        self.widened += added
        return self.evaluate(step_id, approval)

    def _task_text(self, step_id: str) -> str:
        tasks = self.node_tasks(step_id)
        return tasks[-1].content if tasks else ""

    def redraft_request(self, task: Task) -> tuple[list[Assignment], str] | None:
        """After the reject on `task` ended its drafts round (rejected or vetoed): who is
        asked for the next draft (the author of the rejected version when a person, and the
        incident's opener when a communicator) and why (every reject in the round, with its
        comment). None when the round goes on or the node takes no drafts."""
        node = self.state.nodes.get(task.node_id)
        if (node is None or not node.awaiting_draft or task.round != node.round
                or task.state != TaskState.rejected):
            return None
        rejected = self.drafts(task.node_id)[-1] if self.drafts(task.node_id) else None
        people = [p for p in (rejected.author if rejected else None, self.incident.opened_by)
                  if p is not None and has_access(self.directory, p, COMMUNICATOR_ACCESS)]
        reasons = [f"{t.decided_by or t.assignee}: {t.comment or 'no reason given'}"
                   for t in self.round_tasks(task.node_id) if t.state == TaskState.rejected]
        return ([Assignment(person_id=p) for p in dict.fromkeys(people)],
                "; ".join(reasons))

    def take_widened(self) -> list[Task]:
        """Tasks a widening added since the last call (the workflow notifies them)."""
        added, self.widened = self.widened, []
        return added

    def _check_new_holder(self, task: Task, to: str) -> None:
        if not self.directory.has_person(to):
            raise LedgerError(errors.INVALID_DELEGATE, f"unknown person {to!r}")
        if to == task.assignee:
            raise LedgerError(errors.INVALID_DELEGATE, "a task can't be delegated to its holder")
        if to in self.open_holders(task.node_id):
            raise LedgerError(errors.INVALID_DELEGATE,
                              f"{to} already holds a task in this approval")
        if self.one_vote_per_person and to in self._voters(task.node_id):
            raise LedgerError(errors.INVALID_DELEGATE,
                              f"{to} has already voted in this approval: one vote per person")
        original = self._origin(task)
        eligible = {p.id for p in eligible_voters(self.directory, task.role, original.assignee)}
        if to not in eligible:
            role = f"role {task.role}" if task.role else "this task"
            raise LedgerError(
                errors.INVALID_DELEGATE,
                f"{to} can't vote for {role}: a delegate must be an approver who is a member "
                f"of the role, on its on-call roster, or a deputy named for "
                f"{original.assignee}")

    def _origin(self, task: Task) -> Task:
        while task.delegated_from is not None and task.delegated_from in self.state.tasks:
            task = self.state.tasks[task.delegated_from]
        return task

    def validate_delegation(self, req: DelegateRequest) -> None:
        def check() -> None:
            self._check_new_holder(self._live_task_for(req.task_id, req.actor), req.to)
        self._validate(req, check)

    def delegate(self, req: DelegateRequest, at: datetime) -> DelegateResult:
        """Move the vote to `req.to`: the old task becomes `delegated`, a new one opens."""
        def apply() -> DelegateResult:
            old = self._live_task_for(req.task_id, req.actor)
            self._check_new_holder(old, req.to)
            new = self._hand_on(old, req.to, at, via="delegation", actor=req.actor,
                                comment=req.comment)
            self.record(at, "delegation", req.actor, task_id=old.id, new_task_id=new.id,
                        node=old.node_id, **{"from": req.actor, "to": req.to},
                        comment=req.comment or None)
            return DelegateResult(task=old.model_copy(), new_task=new.model_copy())
        return self._once(req, DelegateResult, apply)

    def _hand_on(self, old: Task, to: str, at: datetime, *, via: str, actor: str,
                 comment: str) -> Task:
        new = self._new_task(old.node_id, assignee=to, role=old.role, via=via, title=old.title,
                             content=old.content, at=at, deadline=old.deadline,
                             delegated_from=old.id, round_=old.round)
        new.draft_version, new.draft_sha256 = old.draft_version, old.draft_sha256
        old.delegated_to, old.decided_at, old.decided_by = new.id, at, actor
        old.comment = comment or None
        self._set_task_state(old, TaskState.delegated)
        return new

    def validate_reassign(self, req: ReassignRequest) -> None:
        def check() -> None:
            self._check_new_holder(self._admin_task(req.task_id, req.actor), req.to)
        self._validate(req, check)

    def reassign(self, req: ReassignRequest, at: datetime) -> DelegateResult:
        """An admin moves an open task to another eligible voter, giving a reason."""
        def apply() -> DelegateResult:
            old = self._admin_task(req.task_id, req.actor)
            self._check_new_holder(old, req.to)
            new = self._hand_on(old, req.to, at, via="reassignment", actor=req.actor,
                                comment=req.reason)
            self.record(at, "task_reassigned", req.actor, task_id=old.id, new_task_id=new.id,
                        node=old.node_id, **{"from": old.assignee, "to": req.to},
                        reason=req.reason)
            return DelegateResult(task=old.model_copy(), new_task=new.model_copy())
        return self._once(req, DelegateResult, apply)

    def validate_cancel_task(self, req: CancelTaskRequest) -> None:
        def check() -> None:
            self._admin_task(req.task_id, req.actor)
        self._validate(req, check)

    def cancel_task(self, req: CancelTaskRequest, at: datetime) -> DecideResult:
        """An admin cancels an open task (its vote no longer counts), giving a reason; the
        node is evaluated again, so it may now be decided."""
        def apply() -> DecideResult:
            task = self._admin_task(req.task_id, req.actor)
            self._set_task_state(task, TaskState.cancelled)
            task.decided_at, task.decided_by, task.comment = at, req.actor, req.reason
            self.record(at, "task_cancelled", req.actor, task_id=task.id,
                        assignee=task.assignee, node=task.node_id, reason=req.reason)
            self._settle(task.node_id, at, reason=f"task cancelled by {req.actor}")
            return DecideResult(task=task.model_copy(),
                                node=self.state.nodes[task.node_id].model_copy())
        return self._once(req, DecideResult, apply)

    # ---- projection ----------------------------------------------------------------

    def take_batch(self) -> ProjectionBatch | None:
        """Everything changed since the last batch (None if nothing did)."""
        if not (self._has_changes() or self._answered):
            return None
        new_entries = self.state.timeline[self.state.projected_seq:]
        self.state.incident.rev += 1
        batch = ProjectionBatch(
            incident=self.state.incident,
            tasks=[self.state.tasks[t] for t in sorted(self._changed_tasks)],
            nodes=[self.state.nodes[n] for n in sorted(self._changed_nodes)],
            timeline=list(new_entries),
            answered=self._answered,
        )
        self._answered = []
        self.state.projected_seq = len(self.state.timeline)
        self._changed_tasks.clear()
        self._changed_nodes.clear()
        self._incident_changed = False
        # No copy: the workflow schedules the batch at once, and the SDK serializes an
        # activity's input when it is scheduled, so later changes never reach it.
        return batch

    def requeue(self, batch: ProjectionBatch) -> None:
        """A batch that could not be written: send what it carried again with the next one
        (the writer is idempotent, so whatever part did land is not duplicated)."""
        self._changed_tasks.update(task.id for task in batch.tasks)
        self._changed_nodes.update(node.step_id for node in batch.nodes)
        self._incident_changed = True
        self._answered = [*batch.answered, *self._answered]
        if batch.timeline:
            self.state.projected_seq = min(self.state.projected_seq, batch.timeline[0].seq - 1)

    def answered(self, request_id: str, *, alone: bool) -> None:
        """A command was answered (or answered again, for a repeat): the next batch names it,
        so whoever waits for its read-your-writes knows when the read model shows it.

        `alone`: the mark may make a batch by itself (a repeat changes nothing). Runs that
        project before they answer pass False: a batch of its own would be a new activity in
        their recorded histories, so a repeat there is marked only if something else is
        pending anyway."""
        if alone or self._has_changes():
            self._answered.append(request_id)

    def answers_unsent(self) -> bool:
        """Some answered command's request id is in no batch taken yet."""
        return bool(self._answered)

    def _has_changes(self) -> bool:
        """Something changed since the last batch: the next `take_batch` returns one."""
        return bool(self._changed_tasks or self._changed_nodes or self._incident_changed
                    or len(self.state.timeline) > self.state.projected_seq)

    def mark_all_changed(self) -> None:
        """After a failed projection, or a new run: send everything with the next batch."""
        self._changed_tasks = set(self.state.tasks)
        self._changed_nodes = set(self.state.nodes)
        self._incident_changed = True
        self.state.projected_seq = 0


# ---- reading the timeline: the same rules for the aggregate and for the pages ------------

POSTS_RESUME_KINDS = frozenset({"posts_resumed", "posts_resume_failed", "posts_resume_skipped"})
ACTION_KINDS = frozenset({"action_sending", "action_run", "action_failed",
                          "action_outcome_unknown", "action_outcome_resolved"})


def _latest_by_step(timeline: Sequence[TimelineEntry],
                    kinds: Collection[str]) -> dict[str, TimelineEntry]:
    """Each step's latest entry of these kinds (entries in `seq` order)."""
    latest: dict[str, TimelineEntry] = {}
    for entry in timeline:
        step = entry.details.get("step")
        if isinstance(step, str) and entry.kind in kinds:
            latest[step] = entry
    return latest


def paused_post_steps(timeline: Sequence[TimelineEntry]) -> list[str]:
    """Steps whose pause of scheduled posts holds now: paused, not yet resumed or skipped."""
    latest = _latest_by_step(timeline, {"posts_paused", *POSTS_RESUME_KINDS})
    return [step for step, entry in latest.items() if entry.kind == "posts_paused"]


def kept_paused_request(timeline: Sequence[TimelineEntry]) -> TimelineEntry | None:
    """The latest 'keep posts paused' request if it still holds (`keep: false` undoes)."""
    latest = next((e for e in reversed(timeline) if e.kind == "posts_kept_paused"), None)
    return latest if latest is not None and latest.details.get("keep") else None


def unknown_actions(timeline: Sequence[TimelineEntry]) -> list[TimelineEntry]:
    """The `action_outcome_unknown` entries still waiting for a communicator's answer (a
    later answer, resend or call of the same step ends the wait)."""
    latest = _latest_by_step(timeline, ACTION_KINDS)
    return [entry for entry in latest.values() if entry.kind == "action_outcome_unknown"]
