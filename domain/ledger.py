"""The incident ledger: every state change of a running incident, as pure functions.

`Ledger` wraps the one serializable `IncidentWorkflowState` the workflow carries (also across
continue-as-new). It validates and applies decisions and delegations, opens and closes
approval nodes, and appends to the append-only timeline. It knows nothing of Temporal: the
workflow supplies the time (`workflow.now()`) and turns `LedgerError` into `ApplicationError`.
Changes are tracked so `take_batch` can hand the projection exactly what changed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from domain import errors
from domain.directory import Assignment, Directory
from domain.effects import ProjectionBatch
from domain.ids import task_id
from domain.incident import (
    DecideRequest,
    DecideResult,
    DelegateRequest,
    DelegateResult,
    Incident,
    IncidentStatus,
    IncidentView,
    IncidentWorkflowState,
    NodeState,
    Report,
    Task,
    TaskState,
    TimelineEntry,
    TimelineKind,
)
from domain.playbook import Approval
from domain.quorum import Outcome, Policy, Slot, Vote, evaluate, shortfall

MAX_ANSWERED = 1000  # remembered request ids (idempotent updates), oldest dropped first
COMMUNICATOR_ACCESS = frozenset({"communicator", "admin"})


class LedgerError(Exception):
    """A request the incident can't take; `code` is one of `domain.errors`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


def fingerprint(payload: Any) -> str:
    data = payload.model_dump(mode="json", exclude={"request_id"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


class Ledger:
    def __init__(self, state: IncidentWorkflowState) -> None:
        self.state = state
        self._changed_tasks: set[str] = set()
        self._changed_nodes: set[str] = set()
        self._incident_changed = True

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

    def node_tasks(self, step_id: str) -> list[Task]:
        return [t for t in self.state.tasks.values() if t.node_id == step_id]

    def slots(self, step_id: str) -> dict[str, Slot]:
        """Quorum slots: every task of the node except those handed to a delegate."""
        vote = {TaskState.approved: Vote.approved, TaskState.rejected: Vote.rejected}
        return {t.id: Slot(role=t.role, vote=vote.get(t.state, Vote.open))
                for t in self.node_tasks(step_id)
                if t.state in (TaskState.open, TaskState.approved, TaskState.rejected)}

    def holder(self, task: Task) -> Task:
        """Follow delegations to the live task that now carries this vote."""
        seen = {task.id}
        while task.delegated_to is not None and task.delegated_to not in seen:
            task = self.state.tasks[task.delegated_to]
            seen.add(task.id)
        return task

    # ---- timeline ------------------------------------------------------------------

    def record(self, at: datetime, kind: TimelineKind, actor: str, **details: Any) -> TimelineEntry:
        entry = TimelineEntry(seq=len(self.state.timeline) + 1, at=at, kind=kind, actor=actor,
                              details={k: v for k, v in details.items() if v is not None})
        self.state.timeline.append(entry)
        return entry

    # ---- idempotent requests -------------------------------------------------------

    def answered(self, request: Any) -> Any | None:
        """The first result for this request id, or None; a different payload is a conflict."""
        seen = self.state.answered.get(request.request_id)
        if seen is None:
            return None
        if seen["fingerprint"] != fingerprint(request):
            raise LedgerError(errors.REQUEST_CONFLICT,
                              f"request id {request.request_id!r} was used for a different request")
        return seen["result"]

    def remember(self, request: Any, result: Any) -> None:
        answered = self.state.answered
        answered[request.request_id] = {"fingerprint": fingerprint(request),
                                        "result": result.model_dump(mode="json")}
        while len(answered) > MAX_ANSWERED:
            del answered[next(iter(answered))]

    # ---- reports, status, resolution -----------------------------------------------

    def add_report(self, report: Report, at: datetime) -> None:
        self.require_open()
        self.state.incident.reports += 1
        self._incident_changed = True
        self.record(at, "report_added", report.reported_by, report_id=report.id,
                    summary=report.summary, source_url=report.source_url,
                    severity=report.severity.value if report.severity else None,
                    reports=self.state.incident.reports)

    def require_open(self) -> None:
        if not self.is_open:
            raise LedgerError(errors.INCIDENT_CLOSED, f"incident {self.incident.id} is resolved")

    def require_communicator(self, actor: str, directory: Directory) -> None:
        if not directory.has_person(actor):
            raise LedgerError(errors.FORBIDDEN, f"unknown person {actor!r}")
        if not COMMUNICATOR_ACCESS & {a.value for a in directory.person(actor).access}:
            raise LedgerError(errors.FORBIDDEN, "only a communicator or an admin may do this")

    def resolve(self, actor: str, summary: str, at: datetime) -> None:
        self.require_open()
        for node in self.state.nodes.values():
            if node.outcome == Outcome.pending:
                self.close_node(node.step_id, "cancelled", at, reason="incident resolved")
        incident = self.state.incident
        incident.status = IncidentStatus.resolved
        incident.resolved_at, incident.resolved_by, incident.resolution_summary = at, actor, summary
        self._incident_changed = True
        self.record(at, "resolved", actor, summary=summary)

    # ---- approval nodes ------------------------------------------------------------

    def open_node(self, step_id: str, approval: Approval, at: datetime,
                  deadline: datetime | None, title: str) -> NodeState:
        node = NodeState(step_id=step_id, title=title,
                         policy=describe_policy(policy_for(approval)), opened_at=at,
                         deadline=deadline, tiers_fired=[0] * len(approval.escalation))
        self.state.nodes[step_id] = node
        self._changed_nodes.add(step_id)
        return node

    def add_tasks(self, step_id: str, assignments: list[Assignment], *, title: str, content: str,
                  at: datetime, deadline: datetime | None, actor: str = "playbook",
                  reason: str | None = None) -> list[Task]:
        """One open task per assignment, skipping people who already hold one in the node."""
        holding = {t.assignee for t in self.node_tasks(step_id) if t.state == TaskState.open}
        created = []
        for assignment in assignments:
            if assignment.person_id in holding:
                continue
            holding.add(assignment.person_id)
            task = Task(id=task_id(self.incident.id, step_id, len(self.node_tasks(step_id)) + 1),
                        incident_id=self.incident.id, node_id=step_id, title=title,
                        content=content, assignee=assignment.person_id, role=assignment.role,
                        via=assignment.via, replaces=assignment.replaces, created_at=at,
                        deadline=deadline)
            self.state.tasks[task.id] = task
            self._changed_tasks.add(task.id)
            created.append(task)
            self.record(at, "task_created", actor, task_id=task.id, node=step_id,
                        assignee=task.assignee, role=task.role, via=task.via,
                        replaces=task.replaces, reason=reason)
        return created

    def shortfall(self, step_id: str, approval: Approval) -> dict[str | None, int]:
        return shortfall(policy_for(approval), self.slots(step_id))

    def evaluate(self, step_id: str, approval: Approval) -> Outcome:
        return evaluate(policy_for(approval), self.slots(step_id))

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
                task.state = left
                task.rev += 1
                self._changed_tasks.add(task.id)
                self.record(at, "task_expired" if left == TaskState.expired else "task_cancelled",
                            "system", task_id=task.id, assignee=task.assignee, node=step_id)
        slots = self.slots(step_id)
        self.record(at, "node_outcome", "system", node=step_id, outcome=str(outcome),
                    reason=reason, policy=node.policy,
                    approved=[t for t, s in slots.items() if s.vote is Vote.approved],
                    rejected=[t for t, s in slots.items() if s.vote is Vote.rejected])

    def node_result(self, step_id: str) -> NodeState:
        return self.state.nodes[step_id]

    # ---- decisions and delegation --------------------------------------------------

    def _live_task_for(self, task_id_: str, actor: str) -> Task:
        task = self.state.tasks.get(task_id_)
        if task is None:
            raise LedgerError(errors.TASK_NOT_FOUND, f"no task {task_id_!r}")
        live = self.holder(task)
        if actor not in (live.assignee,):
            if actor == task.assignee and task.state == TaskState.delegated:
                raise LedgerError(errors.TASK_CLOSED,
                                  f"task {task.id} was delegated to {live.assignee}")
            raise LedgerError(errors.NOT_YOUR_TASK, f"task {task.id} is not assigned to {actor}")
        self.require_open()
        if live.state != TaskState.open:
            raise LedgerError(errors.TASK_CLOSED, f"task {live.id} is {live.state.value}")
        node = self.state.nodes.get(live.node_id)
        if node is None or node.outcome != Outcome.pending:
            raise LedgerError(errors.TASK_CLOSED, f"approval {live.node_id} has ended")
        return live

    def validate_decision(self, req: DecideRequest) -> None:
        if self.answered(req) is None:
            self._live_task_for(req.task_id, req.actor)

    def decide(self, req: DecideRequest, approval: Approval, at: datetime) -> DecideResult:
        """Apply a vote; end the node at once if it is now approved, rejected or vetoed."""
        first = self.answered(req)
        if first is not None:
            return DecideResult.model_validate(first)
        task = self._live_task_for(req.task_id, req.actor)
        task.state = TaskState.approved if req.decision == "approve" else TaskState.rejected
        task.decided_at, task.decided_by, task.comment = at, req.actor, req.comment or None
        task.rev += 1
        self._changed_tasks.add(task.id)
        self.record(at, "decision", req.actor, task_id=task.id, node=task.node_id,
                    decision=req.decision, comment=req.comment or None, role=task.role)
        outcome = self.evaluate(task.node_id, approval)
        if outcome != Outcome.pending:
            self.close_node(task.node_id, outcome, at,
                            reason=f"{req.decision} by {req.actor}")
        result = DecideResult(task=task, node=self.state.nodes[task.node_id])
        self.remember(req, result)
        return result

    def validate_delegation(self, req: DelegateRequest, directory: Directory) -> None:
        if self.answered(req) is not None:
            return
        task = self._live_task_for(req.task_id, req.actor)
        if not directory.has_person(req.to):
            raise LedgerError(errors.INVALID_DELEGATE, f"unknown person {req.to!r}")
        if req.to == task.assignee:
            raise LedgerError(errors.INVALID_DELEGATE, "a task can't be delegated to its holder")
        if any(t.assignee == req.to and t.state == TaskState.open
               for t in self.node_tasks(task.node_id)):
            raise LedgerError(errors.INVALID_DELEGATE,
                              f"{req.to} already holds a task in this approval")

    def delegate(self, req: DelegateRequest, at: datetime) -> DelegateResult:
        """Move the vote to `req.to`: the old task becomes `delegated`, a new one opens."""
        first = self.answered(req)
        if first is not None:
            return DelegateResult.model_validate(first)
        old = self._live_task_for(req.task_id, req.actor)
        new = Task(id=task_id(self.incident.id, old.node_id, len(self.node_tasks(old.node_id)) + 1),
                   incident_id=old.incident_id, node_id=old.node_id, title=old.title,
                   content=old.content, assignee=req.to, role=old.role, via="delegation",
                   created_at=at, deadline=old.deadline, delegated_from=old.id)
        old.state, old.delegated_to, old.decided_at, old.decided_by = (
            TaskState.delegated, new.id, at, req.actor)
        old.comment = req.comment or None
        old.rev += 1
        self.state.tasks[new.id] = new
        self._changed_tasks |= {old.id, new.id}
        self.record(at, "delegation", req.actor, task_id=old.id, new_task_id=new.id,
                    node=old.node_id, **{"from": req.actor, "to": req.to},
                    comment=req.comment or None)
        result = DelegateResult(task=old, new_task=new)
        self.remember(req, result)
        return result

    # ---- projection ----------------------------------------------------------------

    def take_batch(self) -> ProjectionBatch | None:
        """Everything changed since the last batch (None if nothing did)."""
        new_entries = self.state.timeline[self.state.projected_seq:]
        changed = self._changed_tasks or self._changed_nodes or self._incident_changed
        if not (new_entries or changed):
            return None
        self.state.incident.rev += 1
        batch = ProjectionBatch(
            incident=self.state.incident,
            tasks=[self.state.tasks[t] for t in sorted(self._changed_tasks)],
            nodes=[self.state.nodes[n] for n in sorted(self._changed_nodes)],
            timeline=list(new_entries),
        )
        self.state.projected_seq = len(self.state.timeline)
        self._changed_tasks.clear()
        self._changed_nodes.clear()
        self._incident_changed = False
        return batch.model_copy(deep=True)

    def mark_all_changed(self) -> None:
        """After a failed projection, or a new run: send everything with the next batch."""
        self._changed_tasks = set(self.state.tasks)
        self._changed_nodes = set(self.state.nodes)
        self._incident_changed = True
        self.state.projected_seq = 0
