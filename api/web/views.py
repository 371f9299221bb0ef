"""What the pages need beyond the read model: eligible delegates, vetoes, next escalation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.directory import Directory, Person
from domain.incident import Incident, IncidentView, NodeState, Task, TimelineEntry
from domain.ledger import eligible_voters, kept_paused_request, paused_post_steps
from domain.playbook import Approval, Playbook
from domain.quorum import Outcome

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


@dataclass(frozen=True)
class DraftNode:
    """An approval node a communicator may submit the next version of the text for."""

    step_id: str
    title: str
    current: str | None  # the text under approval now; None before the node opens
    awaiting: bool  # a reject ended the round: the approvers wait for a new version


def draft_nodes(playbook: Playbook | None, view: IncidentView) -> list[DraftNode]:
    """Approval steps that take drafts and have not ended, in playbook order: the opened
    ones known by their state (a draft version, or waiting for one), and, when the pinned
    playbook version is at hand, the ones the playbook has not reached yet (a draft
    submitted early is what the node opens with). The aggregate decides whether the
    submission is allowed; this only says where a form makes sense."""
    nodes = {node.step_id: node for node in view.nodes}
    steps = [step.id for _, step in playbook.walk()
             if step.approval is not None and step.approval.drafts is not None] \
        if playbook is not None else []
    steps += [n.step_id for n in view.nodes if n.step_id not in steps
              and (n.draft_version is not None or n.awaiting_draft)]
    out: list[DraftNode] = []
    for step_id in steps:
        node = nodes.get(step_id)
        if node is not None and node.outcome != Outcome.pending:
            continue
        texts = [t.content for t in view.tasks if t.node_id == step_id]
        out.append(DraftNode(step_id=step_id, title=node.title if node else step_id,
                             current=texts[-1] if texts else None,
                             awaiting=node is not None and node.awaiting_draft))
    return out


@dataclass(frozen=True)
class PausedPosts:
    """Scheduled posts a playbook action paused: they resume on resolution unless a
    communicator keeps them paused (the latest request wins)."""

    steps: list[str]
    kept: TimelineEntry | None  # the request that keeps them paused, if one holds


def paused_posts(entries: list[TimelineEntry]) -> PausedPosts | None:
    """None unless some step's pause of scheduled posts still holds (the aggregate's rule,
    `domain.ledger.paused_post_steps`, read off the projected timeline)."""
    ordered = sorted(entries, key=lambda e: e.seq)
    steps = paused_post_steps(ordered)
    return PausedPosts(steps=steps, kept=kept_paused_request(ordered)) if steps else None
