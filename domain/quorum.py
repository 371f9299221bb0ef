"""Quorum evaluation for approval nodes: pure, no Temporal, no I/O.

A node has *slots*, one per live task; each slot counts toward at most one role and is
open, approved or rejected. A `Policy` says when the node is decided:

- `all`: every slot approves;           `any`: one slot approves;
- `k`: at least k slots approve;        `require`: for every (role, min), min approvals
  from slots of that role (rules combined with AND).

Veto: a reject from a slot whose role is in `veto` ends the node at once (`vetoed`).
The node is rejected as soon as the policy can no longer be met with the open slots.

These functions only judge a set of slots. For incidents, which tasks are slots, refusing
votes once a node has ended, and closing the node belong to the incident aggregate
(`domain.ledger`). `Tally` is the small mutable node that a playbook-change review
(`workflows.change_approval`) votes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


class Vote(StrEnum):
    open = "open"
    approved = "approved"
    rejected = "rejected"


class Outcome(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"  # quorum impossible
    vetoed = "vetoed"
    expired = "expired"  # deadline passed (decided by the workflow, not by votes)


@dataclass(frozen=True)
class Policy:
    mode: Literal["all", "any", "k", "require"]
    k: int = 0
    require: tuple[tuple[str, int], ...] = ()
    veto: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Slot:
    role: str | None
    vote: Vote = Vote.open


def evaluate(policy: Policy, slots: dict[str, Slot]) -> Outcome:
    """The node's outcome for the current votes (never `expired`)."""
    live = list(slots.values())
    if any(s.vote is Vote.rejected and s.role in policy.veto for s in live):
        return Outcome.vetoed
    approved = [s for s in live if s.vote is Vote.approved]
    open_ = [s for s in live if s.vote is Vote.open]
    if policy.mode == "all":
        if not live or any(s.vote is Vote.rejected for s in live):
            return Outcome.rejected
        return Outcome.approved if not open_ else Outcome.pending
    if policy.mode == "any":
        if approved:
            return Outcome.approved
        return Outcome.pending if open_ else Outcome.rejected
    if policy.mode == "k":
        if len(approved) >= policy.k:
            return Outcome.approved
        return Outcome.pending if len(approved) + len(open_) >= policy.k else Outcome.rejected
    met = True
    for role, minimum in policy.require:
        yes = sum(1 for s in approved if s.role == role)
        maybe = sum(1 for s in open_ if s.role == role)
        if yes + maybe < minimum:
            return Outcome.rejected
        met = met and yes >= minimum
    return Outcome.approved if met else Outcome.pending


def shortfall(policy: Policy, slots: dict[str, Slot]) -> dict[str | None, int]:
    """How many more voters each role would need for the policy to stay possible
    (only roles that are short). Used to top up a node whose voters are off-hours."""
    live = [s for s in slots.values() if s.vote is not Vote.rejected]
    if policy.mode == "require":
        out: dict[str | None, int] = {}
        for role, minimum in policy.require:
            have = sum(1 for s in live if s.role == role)
            if have < minimum:
                out[role] = minimum - have
        return out
    need = policy.k if policy.mode == "k" else 1
    return {None: need - len(live)} if len(live) < need else {}


class QuorumError(Exception):
    """A vote that the node can't take: unknown slot, already voted, or node decided."""


@dataclass
class Tally:
    """A change review's node (`workflows.change_approval`): slots, and the outcome once
    decided; votes, and slots added, after that are refused."""

    policy: Policy
    slots: dict[str, Slot] = field(default_factory=dict)
    outcome: Outcome = Outcome.pending

    def add_slot(self, slot_id: str, role: str | None) -> None:
        if self.outcome is not Outcome.pending:
            raise QuorumError("node already decided")
        if slot_id in self.slots:
            raise QuorumError(f"slot {slot_id} exists")
        self.slots[slot_id] = Slot(role=role)

    def check(self) -> Outcome:
        """Evaluate after the initial slots are in (a node short of voters ends rejected)."""
        if self.outcome is Outcome.pending:
            self.outcome = evaluate(self.policy, self.slots)
        return self.outcome

    def vote(self, slot_id: str, approve: bool) -> Outcome:
        if self.outcome is not Outcome.pending:
            raise QuorumError("node already decided")
        slot = self.slots.get(slot_id)
        if slot is None:
            raise QuorumError(f"unknown slot {slot_id}")
        if slot.vote is not Vote.open:
            raise QuorumError(f"slot {slot_id} already voted")
        self.slots[slot_id] = Slot(role=slot.role, vote=Vote.approved if approve else Vote.rejected)
        self.outcome = evaluate(self.policy, self.slots)
        return self.outcome
