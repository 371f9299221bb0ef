"""Example tests of quorum evaluation (`domain.quorum`) for the policies a playbook can state.

`evaluate` and `shortfall` judge a set of slots and nothing else. For incidents, refusing a
vote once the node has ended, an unknown or already decided task, delegation, expiry and
topping up a node as it opens are the aggregate's rules (`tests/test_ledger.py`). `Tally`,
the small mutable node that a playbook-change review votes on, is tested at the end.

The headline policy comes from the brief's first scenario: a holding statement needs
1 of Legal AND 2 of 4 Comms leads, and any Legal reject vetoes it.
"""

from __future__ import annotations

import pytest

from domain.quorum import Outcome, Policy, QuorumError, Slot, Tally, Vote, evaluate, shortfall

LEGAL_AND_COMMS = Policy(
    mode="require", require=(("legal", 1), ("comms", 2)), veto=frozenset({"legal"}))

Slots = dict[str, Slot]


def holding_statement_slots() -> Slots:
    """1 Legal and 4 Comms leads, as in the Friday 17:40 scenario, nobody has voted."""
    slots = {"legal-1": Slot("legal")} | {f"comms-{n}": Slot("comms") for n in range(1, 5)}
    assert evaluate(LEGAL_AND_COMMS, slots) is Outcome.pending
    return slots


def slots_of(*roles: str | None) -> Slots:
    return {f"s{n}": Slot(role) for n, role in enumerate(roles)}


def cast(slots: Slots, slot_id: str, approve: bool) -> Slots:
    """The slots after `slot_id` votes (a new dict: the caller's is left alone)."""
    assert slots[slot_id].vote is Vote.open, "each slot votes once"
    return {**slots, slot_id: Slot(slots[slot_id].role,
                                   Vote.approved if approve else Vote.rejected)}


def votes(policy: Policy, slots: Slots, *ballots: tuple[str, bool]) -> list[Outcome]:
    """The outcome after each ballot in turn."""
    out = []
    for slot_id, approve in ballots:
        slots = cast(slots, slot_id, approve)
        out.append(evaluate(policy, slots))
    return out


# --- 1 of Legal AND 2 of Comms, Legal vetoes ---------------------------------------------

def test_approved_exactly_when_one_legal_and_two_comms_approve() -> None:
    assert votes(LEGAL_AND_COMMS, holding_statement_slots(),
                 ("comms-1", True),
                 ("legal-1", True),  # 1 legal, only 1 comms so far
                 ("comms-2", True)) == [Outcome.pending, Outcome.pending, Outcome.approved]


def test_two_comms_alone_are_not_enough() -> None:
    assert votes(LEGAL_AND_COMMS, holding_statement_slots(),
                 ("comms-1", True), ("comms-2", True),
                 ("comms-3", True),  # a third comms can't stand in for legal
                 ) == [Outcome.pending, Outcome.pending, Outcome.pending]


def test_legal_reject_vetoes_even_after_comms_approved() -> None:
    slots = holding_statement_slots()
    for comms in ("comms-1", "comms-2"):
        slots = cast(slots, comms, True)
    assert evaluate(LEGAL_AND_COMMS, slots) is Outcome.pending
    vetoed = cast(slots, "legal-1", False)
    assert evaluate(LEGAL_AND_COMMS, vetoed) is Outcome.vetoed
    # more approvals can't outvote a veto
    assert evaluate(LEGAL_AND_COMMS, cast(vetoed, "comms-3", True)) is Outcome.vetoed


def test_comms_rejects_end_the_node_the_moment_two_of_four_is_impossible() -> None:
    outcomes = votes(LEGAL_AND_COMMS, holding_statement_slots(),
                     ("legal-1", True), ("comms-1", False),
                     ("comms-2", False),  # 2 comms still open: still possible
                     ("comms-3", False))  # 1 comms left: impossible now
    assert outcomes == [Outcome.pending, Outcome.pending, Outcome.pending, Outcome.rejected]


def test_a_comms_reject_is_not_a_veto() -> None:
    assert votes(LEGAL_AND_COMMS, holding_statement_slots(),
                 ("comms-1", False), ("legal-1", True), ("comms-2", True),
                 ("comms-3", True)) == [Outcome.pending] * 3 + [Outcome.approved]


def test_approvers_of_unrelated_roles_do_not_count() -> None:
    slots = {"legal": Slot("legal"), "c1": Slot("comms"), "c2": Slot("comms"), "x": Slot("exec")}
    assert votes(LEGAL_AND_COMMS, slots, ("x", True), ("legal", True), ("c1", True),
                 ("c2", True)) == [Outcome.pending] * 3 + [Outcome.approved]


def test_a_vote_for_no_role_counts_for_no_requirement() -> None:
    slots = {"legal": Slot("legal", Vote.approved), "c1": Slot("comms", Vote.approved),
             "anyone": Slot(None, Vote.approved), "c2": Slot("comms")}
    assert evaluate(LEGAL_AND_COMMS, slots) is Outcome.pending


# --- all, any, k-of-n -------------------------------------------------------------------

def test_all_needs_every_slot_and_one_reject_ends_it() -> None:
    everyone = Policy(mode="all")
    assert votes(everyone, slots_of("a", "b", "c"), ("s0", True), ("s1", True),
                 ("s2", True)) == [Outcome.pending, Outcome.pending, Outcome.approved]
    assert votes(everyone, slots_of("a", "b", "c"), ("s0", True),
                 ("s1", False)) == [Outcome.pending, Outcome.rejected]


def test_any_approves_on_first_approval_and_rejects_when_everyone_rejected() -> None:
    anyone = Policy(mode="any")
    assert votes(anyone, slots_of(None, None, None), ("s1", True)) == [Outcome.approved]
    assert votes(anyone, slots_of(None, None), ("s0", False),
                 ("s1", False)) == [Outcome.pending, Outcome.rejected]


def test_k_of_n_approves_at_k_and_rejects_when_k_is_out_of_reach() -> None:
    two = Policy(mode="k", k=2)
    assert votes(two, slots_of(None, None, None), ("s0", True),
                 ("s2", True)) == [Outcome.pending, Outcome.approved]
    assert votes(two, slots_of(None, None, None), ("s0", False),
                 ("s1", False),  # 1 open slot left, 2 needed
                 ) == [Outcome.pending, Outcome.rejected]


def test_veto_role_applies_to_k_of_n_too() -> None:
    policy = Policy(mode="k", k=1, veto=frozenset({"legal"}))
    assert votes(policy, slots_of("comms", "legal", "comms"), ("s1", False)) == [Outcome.vetoed]


def test_veto_role_applies_to_all_and_any() -> None:
    slots = {"c": Slot("comms", Vote.approved), "l": Slot("legal", Vote.rejected),
             "x": Slot("exec")}
    for policy in (Policy("all", veto=frozenset({"legal"})),
                   Policy("any", veto=frozenset({"legal"}))):
        assert evaluate(policy, slots) is Outcome.vetoed, policy.mode


# --- a node as it opens --------------------------------------------------------------------

@pytest.mark.parametrize(("policy", "roles"), [
    (Policy(mode="k", k=3), (None, None)),
    (LEGAL_AND_COMMS, ("legal", "comms")),
    (LEGAL_AND_COMMS, ("comms", "comms", "comms")),
    (Policy(mode="all"), ()),
    (Policy(mode="any"), ()),
])
def test_a_node_opened_with_too_few_voters_is_rejected(
        policy: Policy, roles: tuple[str | None, ...]) -> None:
    assert evaluate(policy, slots_of(*roles)) is Outcome.rejected


def test_a_node_with_enough_voters_is_pending_until_the_votes_are_in() -> None:
    slots = holding_statement_slots()
    assert evaluate(LEGAL_AND_COMMS, slots) is Outcome.pending
    assert evaluate(LEGAL_AND_COMMS, slots) is Outcome.pending  # judging twice changes nothing
    assert votes(LEGAL_AND_COMMS, slots, ("legal-1", True), ("comms-1", True),
                 ("comms-2", True))[-1] is Outcome.approved
    assert all(slot.vote is Vote.open for slot in slots.values())  # the input is not mutated


def test_evaluate_never_says_expired() -> None:
    """Expiry is the deadline's business, never the votes'."""
    slots = holding_statement_slots()
    for policy in (LEGAL_AND_COMMS, Policy(mode="all"), Policy(mode="any"), Policy("k", k=9)):
        assert evaluate(policy, slots) is not Outcome.expired


# --- shortfall ------------------------------------------------------------------------------

def test_shortfall_names_the_roles_that_need_more_voters() -> None:
    slots = {"l": Slot("legal", Vote.rejected), "c1": Slot("comms"), "x": Slot("exec")}
    policy = Policy(mode="require", require=(("legal", 1), ("comms", 2)))
    assert shortfall(policy, slots) == {"legal": 1, "comms": 1}
    assert shortfall(policy, {**slots, "l2": Slot("legal"), "c2": Slot("comms")}) == {}


def test_shortfall_for_k_all_and_any() -> None:
    slots = {"a": Slot(None, Vote.approved), "b": Slot(None, Vote.rejected)}
    assert shortfall(Policy(mode="k", k=3), slots) == {None: 2}
    assert shortfall(Policy(mode="any"), {}) == {None: 1}
    assert shortfall(Policy(mode="all"), {"a": Slot(None)}) == {}


def test_topping_up_the_shortfall_makes_the_node_possible() -> None:
    policy = Policy(mode="require", require=(("legal", 1), ("comms", 2)))
    slots = {"c1": Slot("comms")}  # the other approvers are off-hours
    assert evaluate(policy, slots) is Outcome.rejected
    for role, missing in shortfall(policy, slots).items():
        for n in range(missing):
            slots[f"on-call-{role}-{n}"] = Slot(role)
    assert shortfall(policy, slots) == {}
    assert evaluate(policy, slots) is Outcome.pending


# --- Tally: the mutable node a playbook-change review votes on -----------------------------
# (`workflows.change_approval`, `domain.policy_versions`; incidents use the aggregate)

def review_node(policy: Policy = LEGAL_AND_COMMS) -> Tally:
    tally = Tally(policy)
    for slot_id, slot in holding_statement_slots().items():
        tally.add_slot(slot_id, slot.role)
    assert tally.check() is Outcome.pending
    return tally


def test_a_tally_follows_evaluate_and_refuses_votes_once_decided() -> None:
    tally = review_node()
    assert tally.vote("comms-1", True) is Outcome.pending
    assert tally.vote("legal-1", True) is Outcome.pending
    assert tally.vote("comms-2", True) is Outcome.approved
    assert tally.outcome is Outcome.approved
    before = dict(tally.slots)
    with pytest.raises(QuorumError):
        tally.vote("comms-3", False)
    with pytest.raises(QuorumError):
        tally.add_slot("late", "legal")  # too late to top up after the node ended
    assert (tally.slots, tally.outcome) == (before, Outcome.approved)


def test_a_tally_vetoes_and_refuses_unknown_and_repeated_votes() -> None:
    tally = review_node()
    with pytest.raises(QuorumError):
        tally.vote("nobody", True)
    tally.vote("comms-1", True)
    with pytest.raises(QuorumError):
        tally.vote("comms-1", False)
    assert tally.slots["comms-1"].vote is Vote.approved
    with pytest.raises(QuorumError):
        tally.add_slot("comms-1", "comms")  # a slot id is taken once
    assert tally.vote("legal-1", False) is Outcome.vetoed


@pytest.mark.parametrize(("policy", "roles"), [
    (Policy(mode="k", k=3), (None, None)),
    (LEGAL_AND_COMMS, ("comms", "comms", "comms")),
    (Policy(mode="any"), ()),
])
def test_a_tally_opened_with_too_few_voters_ends_rejected(
        policy: Policy, roles: tuple[str | None, ...]) -> None:
    tally = Tally(policy)
    for n, role in enumerate(roles):
        tally.add_slot(f"s{n}", role)
    assert tally.check() is Outcome.rejected
    assert tally.check() is Outcome.rejected  # checking again changes nothing
