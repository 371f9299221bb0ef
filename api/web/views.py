"""What the pages need beyond the read model: eligible delegates, vetoes, next escalation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.directory import Directory, Person
from domain.incident import Incident, NodeState, Task
from domain.ledger import eligible_voters
from domain.playbook import Approval, Playbook

from ..playbook_registry import PlaybookRegistry


def playbook_of(registry: PlaybookRegistry, incident: Incident) -> Playbook | None:
    """The playbook the incident runs, if the registry still has that version."""
    snapshot = registry.get(incident.playbook.id)
    if snapshot is None or snapshot.version != incident.playbook.version:
        return None
    return snapshot.definition


def approval_of(playbook: Playbook | None, node_id: str) -> Approval | None:
    if playbook is None:
        return None
    try:
        return playbook.step(node_id).approval
    except StopIteration:
        return None


def vetoes(approval: Approval | None, task: Task) -> bool:
    """True if this task's reject alone ends the approval rejected."""
    return approval is not None and task.role is not None and task.role in approval.veto


def eligible_delegates(directory: Directory, task: Task, at: datetime,
                       original_assignee: str | None = None) -> list[Person]:
    """Who the holder may hand this vote to: the aggregate's rule (`eligible_voters`:
    approvers who are members of the role, on its on-call roster, or a deputy named for the
    task's original assignee), except the holder. The workflow checks again on submit."""
    people = eligible_voters(directory, task.role, original_assignee or task.assignee)
    return sorted((p for p in people if p.id != task.assignee), key=lambda p: p.name)


@dataclass(frozen=True)
class Upcoming:
    at: datetime
    label: str


def next_escalation(node: NodeState, approval: Approval | None) -> Upcoming | None:
    """The next escalation tier (or the deadline) of a pending node, whichever is first."""
    if node.outcome != "pending":
        return None
    found: list[Upcoming] = []
    if approval is not None:
        for index, tier in enumerate(approval.escalation):
            fired = node.tiers_fired[index] if index < len(node.tiers_fired) else 0
            if fired > tier.repeat:
                continue
            at = node.opened_at + tier.after + (tier.every or timedelta(0)) * fired
            name = f"tier {index + 1}" + (f" ({tier.name})" if tier.name else "")
            found.append(Upcoming(at, name))
    if node.deadline is not None:
        found.append(Upcoming(node.deadline, "deadline"))
    return min(found, key=lambda u: u.at) if found else None
