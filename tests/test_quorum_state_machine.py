"""Property test: a `Tally` driven by random votes, delegations and escalations agrees with a
brute-force reference model of the quorum rules.

The reference knows nothing of `domain.quorum`'s shortcuts. It decides from the slots alone:
- vetoed   iff a slot whose role may veto has rejected;
- approved iff the approvals counted so far meet the requirement;
- rejected iff no way of voting the still-open slots (every approve/reject assignment,
  enumerated) would meet it;
- pending otherwise.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain.quorum import Outcome, Policy, QuorumError, Slot, Tally, Vote

NAMED_ROLES = ("legal", "comms", "exec")
ROLES: tuple[str | None, ...] = (*NAMED_ROLES, None)
MAX_SLOTS = 8  # the reference enumerates 2**open completions


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """all / any / k-of-n / per-role requirements, each with an optional set of veto roles."""
    veto = frozenset(draw(st.sets(st.sampled_from(NAMED_ROLES), max_size=2)))
    mode = draw(st.sampled_from(["require", "all", "any", "k", "require"]))
    if mode == "k":
        return Policy(mode="k", k=draw(st.integers(1, 4)), veto=veto)
    if mode == "require":
        roles = draw(st.lists(st.sampled_from(NAMED_ROLES), min_size=1, max_size=3, unique=True))
        require = tuple((role, draw(st.integers(1, 2))) for role in roles)
        return Policy(mode="require", require=require, veto=veto)
    return Policy(mode="all" if mode == "all" else "any", veto=veto)


@dataclass
class ReferenceNode:
    """The rules, written the slow, obvious way. A vote is None (open), True or False."""

    policy: Policy
    votes: dict[str, tuple[str | None, bool | None]] = field(default_factory=dict)

    def met(self, decided: Iterable[tuple[str | None, bool | None]]) -> bool:
        slots = list(decided)
        yes_roles = [role for role, vote in slots if vote is True]
        if self.policy.mode == "all":
            return bool(slots) and len(yes_roles) == len(slots)
        if self.policy.mode == "any":
            return len(yes_roles) >= 1
        if self.policy.mode == "k":
            return len(yes_roles) >= self.policy.k
        return all(yes_roles.count(role) >= least for role, least in self.policy.require)

    def vetoed(self) -> bool:
        return any(vote is False and role in self.policy.veto for role, vote in self.votes.values())

    def still_possible(self) -> bool:
        slots = list(self.votes.values())
        open_at = [n for n, (_, vote) in enumerate(slots) if vote is None]
        for completion in itertools.product((True, False), repeat=len(open_at)):
            trial = list(slots)
            for n, vote in zip(open_at, completion, strict=True):
                trial[n] = (trial[n][0], vote)
            if self.met(trial):
                return True
        return False

    def outcome(self) -> Outcome:
        if self.vetoed():
            return Outcome.vetoed
        if self.met(self.votes.values()):
            return Outcome.approved
        return Outcome.pending if self.still_possible() else Outcome.rejected


def as_reference(slots: Mapping[str, Slot]) -> dict[str, tuple[str | None, bool | None]]:
    """The tally's slots in the reference's terms (so the two can be compared)."""
    return {slot_id: (slot.role, None if slot.vote is Vote.open else slot.vote is Vote.approved)
            for slot_id, slot in slots.items()}


class QuorumMachine(RuleBasedStateMachine):
    """Opens a node (adds slots, then `check()`), then votes, delegates and escalates."""

    def __init__(self) -> None:
        super().__init__()
        self.tally = Tally(Policy(mode="any"))  # replaced by `choose_policy`
        self.model = ReferenceNode(self.tally.policy)
        self.opened = False  # `check()` was called or a vote was cast
        self.final: Outcome | None = None
        self.serial = 0

    def new_id(self) -> str:
        self.serial += 1
        return f"slot-{self.serial}"

    def open_ids(self) -> list[str]:
        return [slot_id for slot_id, (_, vote) in self.model.votes.items() if vote is None]

    def pending(self) -> bool:
        return self.tally.outcome is Outcome.pending

    def ended(self) -> bool:
        return not self.pending()

    @initialize(policy=policies(), data=st.data())
    def choose_policy(self, policy: Policy, data: st.DataObject) -> None:
        """Picks the policy and the first approvers (roles the policy names are likelier)."""
        self.tally = Tally(policy)
        self.model = ReferenceNode(policy)
        named = tuple(role for role, _ in policy.require)
        roles = data.draw(st.lists(st.sampled_from((*named, *ROLES)), max_size=MAX_SLOTS))
        for role in roles:
            self.add_approver(role)

    # Every rule is valid in every state (no preconditions), so Hypothesis never discards a
    # run; each rule checks that the node refuses it once the node has ended.

    @rule(role=st.sampled_from(ROLES))
    def add_approver(self, role: str | None) -> None:
        """Before the node opens: an initial approver. After: an escalation tier adds one."""
        slot_id = self.new_id()
        if self.ended():
            self.assert_refused(lambda: self.tally.add_slot(slot_id, role))
        elif len(self.model.votes) < MAX_SLOTS:
            self.tally.add_slot(slot_id, role)
            self.model.votes[slot_id] = (role, None)
            assert self.pending(), "an extra approver must not decide the node"

    @rule()
    def open_node(self) -> None:
        """The workflow checks the node once its first approvers are in; again is a no-op."""
        before = self.tally.outcome
        self.opened = True
        outcome = self.tally.check()
        assert outcome is self.tally.outcome
        if before is not Outcome.pending:
            assert outcome is before

    @rule(pick=st.integers(min_value=0), approve=st.sampled_from([True, True, False]))
    def vote(self, pick: int, approve: bool) -> None:
        """A vote on a random open slot; once the node has ended, on any slot (or a
        stranger's), which must be refused without changing anything."""
        if self.ended():
            candidates = [*self.model.votes, "stranger"]
            slot_id = candidates[pick % len(candidates)]
            self.assert_refused(lambda: self.tally.vote(slot_id, approve))
            return
        open_ids = self.open_ids()
        if not open_ids:  # nobody to vote yet: a stranger's vote is refused
            self.assert_refused(lambda: self.tally.vote("stranger", approve))
            return
        slot_id = open_ids[pick % len(open_ids)]
        self.opened = True
        returned = self.tally.vote(slot_id, approve)
        role, _ = self.model.votes[slot_id]
        self.model.votes[slot_id] = (role, approve)
        assert returned is self.tally.outcome

    @rule(pick=st.integers(min_value=0))
    def delegate(self, pick: int) -> None:
        """The approver of a random open task hands it to a deputy of the same role."""
        open_ids = self.open_ids()
        if self.ended() or not open_ids:
            slot_id = open_ids[pick % len(open_ids)] if open_ids else "stranger"
            self.assert_refused(lambda: self.tally.remove_slot(slot_id))
            return
        slot_id = open_ids[pick % len(open_ids)]
        role, _ = self.model.votes.pop(slot_id)
        deputy = self.new_id()
        self.tally.remove_slot(slot_id)
        self.tally.add_slot(deputy, role)
        self.model.votes[deputy] = (role, None)
        assert self.pending(), "delegating an open task must not decide the node"

    def assert_refused(self, change: Callable[[], object]) -> None:
        """`change` must raise QuorumError and leave slots and outcome as they were."""
        before = (dict(self.tally.slots), self.tally.outcome)
        try:
            change()
        except QuorumError:
            pass
        else:
            raise AssertionError(f"node in state {before[1]} accepted a refused change")
        assert (dict(self.tally.slots), self.tally.outcome) == before

    @invariant()
    def slots_mirror_the_model(self) -> None:
        assert as_reference(self.tally.slots) == self.model.votes

    @invariant()
    def outcome_matches_reference(self) -> None:
        outcome = self.tally.outcome
        if not self.opened:
            assert outcome is Outcome.pending
            return
        expected = self.model.outcome()
        met = self.model.met(self.model.votes.values())
        impossible = not self.model.still_possible()
        assert not (met and impossible)
        assert (outcome is Outcome.approved) == (met and not self.model.vetoed())
        assert (outcome in (Outcome.rejected, Outcome.vetoed)) == (
            impossible or self.model.vetoed())
        assert (outcome is Outcome.vetoed) == self.model.vetoed()
        assert outcome is expected, f"tally says {outcome}, reference says {expected}"

    @invariant()
    def final_outcome_never_changes(self) -> None:
        if self.final is not None:
            assert self.tally.outcome is self.final
        elif self.tally.outcome is not Outcome.pending:
            self.final = self.tally.outcome
            event(f"node {self.tally.policy.mode}: {self.final}")


TestQuorum = QuorumMachine.TestCase
TestQuorum.settings = settings(max_examples=500, stateful_step_count=20, deadline=None)
