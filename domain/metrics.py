"""Decision-latency metrics and the post-incident report, computed from an incident's timeline.

Pure functions, no I/O (BRIEF scenario 5, the leadership review). `incident_metrics` reads an
`IncidentView` and its timeline and answers: how long until someone first acted, how long
each approval node took, who decided how fast, and who (or which role) was slowest.

A decision's latency is its time minus its task's `created_at`; a delegate's task is created
at the delegation, so the delegate is measured from then. An approver who never answered
(task still open at `as_of`, or expired) outranks every approver who did: unanswered first,
then the longest wait. Tasks cancelled because the node or the incident ended don't count.
`render_report` turns the same data into a Markdown post-incident report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from domain.incident import IncidentView, Task, TaskState, TimelineEntry
from domain.quorum import Outcome

ACK_KINDS = frozenset({"decision", "status_update"})


class Laggard(BaseModel):
    """The slowest person or role: one task's decision latency, or its age if unanswered."""

    name: str = Field(description="person id, or role id")
    task_id: str
    node: str
    seconds: float
    pending: bool = Field(description="true: still open at `as_of` (age, not latency)")
    answered: bool = Field(description="false: never decided (open, or expired)")


class DecisionMetrics(BaseModel):
    task_id: str
    node: str
    person: str
    role: str | None
    decision: str
    decided_at: datetime
    latency: float = Field(description="seconds from the task's creation to the decision")


class NodeMetrics(BaseModel):
    node: str
    title: str
    policy: str
    outcome: str
    opened_at: datetime
    ended_at: datetime | None
    time_to_outcome: float | None = Field(description="seconds; null while pending")
    escalations: int = Field(description="escalation tiers fired for this node")
    slowest_person: Laggard | None
    slowest_role: Laggard | None


class Counts(BaseModel):
    reports: int
    status_updates: int
    tasks_by_state: dict[str, int]


class IncidentMetrics(BaseModel):
    incident_id: str
    as_of: datetime
    opened_at: datetime
    first_ack_at: datetime | None
    time_to_first_ack: float | None = Field(
        description="seconds from opening to the first decision or status update")
    resolved_at: datetime | None
    time_to_resolution: float | None = Field(description="seconds; null while open")
    nodes: list[NodeMetrics]
    decisions: list[DecisionMetrics]
    slowest_person: Laggard | None
    slowest_role: Laggard | None
    counts: Counts


@dataclass(frozen=True)
class _Wait:
    """One approver's wait on one task: decided, or still unanswered."""

    task: Task
    seconds: float
    state: Literal["decided", "pending", "expired"]


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else (end - start).total_seconds()


def _decisions(view: IncidentView, timeline: list[TimelineEntry]) -> list[DecisionMetrics]:
    tasks = {t.id: t for t in view.tasks}
    created = {str(e.details.get("task_id")): e.at for e in timeline if e.kind == "task_created"}
    created.update({t.id: t.created_at for t in view.tasks})
    found = []
    for entry in timeline:
        if entry.kind != "decision":
            continue
        task_id = str(entry.details.get("task_id"))
        if task_id not in created:
            continue
        task = tasks.get(task_id)
        role = entry.details.get("role", task.role if task else None)
        found.append(DecisionMetrics(
            task_id=task_id, node=str(entry.details.get("node", task.node_id if task else "")),
            person=entry.actor, role=role, decision=str(entry.details.get("decision", "")),
            decided_at=entry.at, latency=(entry.at - created[task_id]).total_seconds()))
    return found


def _waits(view: IncidentView, decisions: list[DecisionMetrics], as_of: datetime) -> list[_Wait]:
    tasks = {t.id: t for t in view.tasks}
    ended = {n.step_id: n.ended_at for n in view.nodes}
    waits = [_Wait(task=tasks[d.task_id], seconds=d.latency, state="decided")
             for d in decisions if d.task_id in tasks]
    for task in view.tasks:
        if task.state == TaskState.open:
            waits.append(_Wait(task=task, seconds=(as_of - task.created_at).total_seconds(),
                               state="pending"))
        elif task.state == TaskState.expired:
            until = ended.get(task.node_id) or task.deadline or as_of
            waits.append(_Wait(task=task, seconds=(until - task.created_at).total_seconds(),
                               state="expired"))
    return waits


def _slowest(waits: Iterable[_Wait], by: Literal["person", "role"]) -> Laggard | None:
    best: _Wait | None = None
    for wait in waits:
        if by == "role" and wait.task.role is None:
            continue
        rank = (wait.state != "decided", wait.seconds)
        if best is None or rank > (best.state != "decided", best.seconds):
            best = wait
    if best is None:
        return None
    name = best.task.assignee if by == "person" else str(best.task.role)
    return Laggard(name=name, task_id=best.task.id, node=best.task.node_id,
                   seconds=best.seconds, pending=best.state == "pending",
                   answered=best.state == "decided")


def incident_metrics(view: IncidentView, timeline: list[TimelineEntry],
                     as_of: datetime) -> IncidentMetrics:
    """Every figure of the leadership review; `as_of` dates the age of unanswered tasks."""
    incident = view.incident
    entries = sorted(timeline, key=lambda e: e.seq)
    first_ack = next((e.at for e in entries if e.kind in ACK_KINDS), None)
    decisions = _decisions(view, entries)
    waits = _waits(view, decisions, as_of)
    nodes = []
    for node in view.nodes:
        mine = [w for w in waits if w.task.node_id == node.step_id]
        nodes.append(NodeMetrics(
            node=node.step_id, title=node.title, policy=node.policy, outcome=str(node.outcome),
            opened_at=node.opened_at, ended_at=node.ended_at,
            time_to_outcome=(None if node.outcome == Outcome.pending
                             else _seconds(node.opened_at, node.ended_at)),
            escalations=sum(1 for e in entries
                            if e.kind == "escalation" and e.details.get("node") == node.step_id),
            slowest_person=_slowest(mine, "person"), slowest_role=_slowest(mine, "role")))
    by_state = {state.value: 0 for state in TaskState}
    for task in view.tasks:
        by_state[task.state.value] += 1
    return IncidentMetrics(
        incident_id=incident.id, as_of=as_of, opened_at=incident.opened_at,
        first_ack_at=first_ack, time_to_first_ack=_seconds(incident.opened_at, first_ack),
        resolved_at=incident.resolved_at,
        time_to_resolution=_seconds(incident.opened_at, incident.resolved_at),
        nodes=nodes, decisions=decisions,
        slowest_person=_slowest(waits, "person"), slowest_role=_slowest(waits, "role"),
        counts=Counts(reports=incident.reports,
                      status_updates=sum(1 for e in entries if e.kind == "status_update"),
                      tasks_by_state=by_state))


# ---- the post-incident report ------------------------------------------------------


def duration(seconds: float | None) -> str:
    """`3h 02m 05s`, `4m 10s`, `12s`; an em dash for no value."""
    if seconds is None:
        return "—"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _cell(value: Any) -> str:
    """One Markdown table cell: on one line, pipes escaped."""
    return " ".join(_text(value).split()).replace("|", "\\|")


def _when(at: datetime | None) -> str:
    return "—" if at is None else at.isoformat()


def _laggard(laggard: Laggard | None) -> str:
    if laggard is None:
        return "—"
    how = ("still open" if laggard.pending
           else "never answered" if not laggard.answered else "decided")
    return (f"{_cell(laggard.name)}: {duration(laggard.seconds)} ({how}; "
            f"task `{laggard.task_id}`)")


def render_report(view: IncidentView, timeline: list[TimelineEntry],
                  metrics: IncidentMetrics) -> str:
    """The post-incident report as Markdown: summary, key times, nodes, timeline."""
    incident = view.incident
    ref = incident.playbook
    lines = [
        f"# Post-incident report: {_cell(incident.title)}", "",
        f"- **Incident:** `{incident.id}`",
        f"- **Severity:** {incident.severity.value}",
        f"- **Status:** {incident.status.value}",
        f"- **Playbook:** `{ref.id}` version {ref.version} (sha256 `{ref.sha256[:12]}`)",
        f"- **Opened by:** {incident.opened_by}; **reports:** {metrics.counts.reports}; "
        f"**status updates:** {metrics.counts.status_updates}",
    ]
    if incident.resolution_summary:
        lines.append(f"- **Resolution:** {_cell(incident.resolution_summary)}")
    lines += [
        "", "## Key times", "", "| measure | at | after opening |", "|---|---|---|",
        f"| opened | {_when(metrics.opened_at)} | — |",
        f"| first acknowledgement | {_when(metrics.first_ack_at)} | "
        f"{duration(metrics.time_to_first_ack)} |",
        f"| resolved | {_when(metrics.resolved_at)} | {duration(metrics.time_to_resolution)} |",
        "", "## Slowest", "",
        f"- **Role:** {_laggard(metrics.slowest_role)}",
        f"- **Person:** {_laggard(metrics.slowest_person)}",
        "", "## Approval nodes", "",
        "| node | policy | outcome | time to outcome | escalations | slowest role "
        "| slowest person |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {_cell(n.title)} (`{n.node}`) | {_cell(n.policy)} | {n.outcome} | "
              f"{duration(n.time_to_outcome)} | {n.escalations} | "
              f"{_laggard(n.slowest_role)} | {_laggard(n.slowest_person)} |"
              for n in metrics.nodes]
    lines += ["", "## Decisions", "", "| at | node | person | role | decision | latency |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {_when(d.decided_at)} | `{d.node}` | {_cell(d.person)} | "
              f"{_cell(d.role or '—')} | {d.decision} | {duration(d.latency)} |"
              for d in metrics.decisions]
    lines += ["", "## Timeline", "", "| # | at | kind | actor | details |", "|---|---|---|---|---|"]
    lines += [f"| {e.seq} | {_when(e.at)} | {e.kind} | {_cell(e.actor)} | "
              + _cell("; ".join(f"{k}={_text(v)}" for k, v in e.details.items())) + " |"
              for e in sorted(timeline, key=lambda e: e.seq)]
    return "\n".join(lines) + "\n"
