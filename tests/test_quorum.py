"""Example tests of quorum evaluation (`domain.quorum`) for the policies a playbook can state.

The headline policy comes from the brief's first scenario: a holding statement needs
1 of Legal AND 2 of 4 Comms leads, and any Legal reject vetoes it.
"""

from __future__ import annotations

import pytest

from domain.quorum import Outcome, Policy, QuorumError, Slot, Tally, Vote, evaluate, shortfall

LEGAL_AND_COMMS = Policy(
    mode="require", require=(("legal", 1), ("comms", 2)), veto=frozenset({"legal"}))


def holding_statement_node() -> Tally:
    """1 Legal and 4 Comms leads, as in the Friday 17:40 scenario."""
    tally = Tally(LEGAL_AND_COMMS)
    tally.add_slot("legal-1", "legal")
    for n in range(1, 5):
        tally.add_slot(f"comms-{n}", "comms")
    assert tally.check() is Outcome.pending
    return tally


def node(policy: Policy, *roles: str | None) -> Tally:
    tally = Tally(policy)
    for n, role in enumerate(roles):
        tally.add_slot(f"s{n}", role)
    tally.check()
    return tally


# --- 1 of Legal AND 2 of Comms, Legal vetoes ---------------------------------------------

def test_approved_exactly_when_one_legal_and_two_comms_approve() -> None:
    tally = holding_statement_node()
    assert tally.vote("comms-1", True) is Outcome.pending
    assert tally.vote("legal-1", True) is Outcome.pending  # 1 legal, only 1 comms so far
    assert tally.vote("comms-2", True) is Outcome.approved
    assert tally.outcome is Outcome.approved


def test_two_comms_alone_are_not_enough() -> None:
    tally = holding_statement_node()
    tally.vote("comms-1", True)
    assert tally.vote("comms-2", True) is Outcome.pending
    assert tally.vote("comms-3", True) is Outcome.pending  # a third comms can't stand in for legal


def test_legal_reject_vetoes_even_after_comms_approved() -> None:
    tally = holding_statement_node()
    tally.vote("comms-1", True)
    tally.vote("comms-2", True)
    assert tally.vote("legal-1", False) is Outcome.vetoed
    with pytest.raises(QuorumError):
        tally.vote("comms-3", True)
    assert tally.outcome is Outcome.vetoed


def test_comms_rejects_end_the_node_the_moment_two_of_four_is_impossible() -> None:
    tally = holding_statement_node()
    tally.vote("legal-1", True)
    assert tally.vote("comms-1", False) is Outcome.pending
    assert tally.vote("comms-2", False) is Outcome.pending  # 2 comms still open: still possible
    assert tally.vote("comms-3", False) is Outcome.rejected  # 1 comms left: impossible now
    with pytest.raises(QuorumError):
        tally.vote("comms-4", True)


def test_a_comms_reject_is_not_a_veto() -> None:
    tally = holding_statement_node()
    assert tally.vote("comms-1", False) is Outcome.pending
    tally.vote("legal-1", True)
    tally.vote("comms-2", True)
    assert tally.vote("comms-3", True) is Outcome.approved


def test_approvers_of_unrelated_roles_do_not_count() -> None:
    tally = Tally(LEGAL_AND_COMMS)
    for slot_id, role in [("legal", "legal"), ("c1", "comms"), ("c2", "comms"), ("x", "exec")]:
        tally.add_slot(slot_id, role)
    tally.check()
    tally.vote("x", True)
    tally.vote("legal", True)
    assert tally.vote("c1", True) is Outcome.pending
    assert tally.vote("c2", True) is Outcome.approved


# --- all, any, k-of-n -------------------------------------------------------------------

def test_all_needs_every_slot_and_one_reject_ends_it() -> None:
    approved = node(Policy(mode="all"), "a", "b", "c")
    assert approved.vote("s0", True) is Outcome.pending
    assert approved.vote("s1", True) is Outcome.pending
    assert approved.vote("s2", True) is Outcome.approved

    rejected = node(Policy(mode="all"), "a", "b", "c")
    rejected.vote("s0", True)
    assert rejected.vote("s1", False) is Outcome.rejected


def test_any_approves_on_first_approval_and_rejects_when_everyone_rejected() -> None:
    first = node(Policy(mode="any"), None, None, None)
    assert first.vote("s1", True) is Outcome.approved

    nobody = node(Policy(mode="any"), None, None)
    assert nobody.vote("s0", False) is Outcome.pending
    assert nobody.vote("s1", False) is Outcome.rejected


def test_k_of_n_approves_at_k_and_rejects_when_k_is_out_of_reach() -> None:
    two_of_three = node(Policy(mode="k", k=2), None, None, None)
    assert two_of_three.vote("s0", True) is Outcome.pending
    assert two_of_three.vote("s2", True) is Outcome.approved

    hopeless = node(Policy(mode="k", k=2), None, None, None)
    assert hopeless.vote("s0", False) is Outcome.pending
    assert hopeless.vote("s1", False) is Outcome.rejected  # 1 open slot left, 2 needed


def test_veto_role_applies_to_k_of_n_too() -> None:
    tally = node(Policy(mode="k", k=1, veto=frozenset({"legal"})), "comms", "legal", "comms")
    assert tally.vote("s1", False) is Outcome.vetoed


# --- check() when the node opens -----------------------------------------------------------

@pytest.mark.parametrize(("policy", "roles"), [
    (Policy(mode="k", k=3), (None, None)),
    (LEGAL_AND_COMMS, ("legal", "comms")),
    (LEGAL_AND_COMMS, ("comms", "comms", "comms")),
    (Policy(mode="all"), ()),
    (Policy(mode="any"), ()),
])
def test_check_rejects_a_node_opened_with_too_few_voters(
        policy: Policy, roles: tuple[str | None, ...]) -> None:
    tally = Tally(policy)
    for n, role in enumerate(roles):
        tally.add_slot(f"s{n}", role)
    assert tally.check() is Outcome.rejected
    with pytest.raises(QuorumError):
        tally.add_slot("late", "legal")  # too late to top up after the node ended


def test_check_keeps_a_node_with_enough_voters_pending_and_is_stable() -> None:
    tally = holding_statement_node()
    assert tally.check() is Outcome.pending
    tally.vote("legal-1", True)
    tally.vote("comms-1", True)
    tally.vote("comms-2", True)
    assert tally.check() is Outcome.approved
    tally.expire()
    assert tally.check() is Outcome.approved  # a decided node never expires


def test_expire_ends_a_pending_node() -> None:
    tally = holding_statement_node()
    tally.expire()
    assert tally.outcome is Outcome.expired
    with pytest.raises(QuorumError):
        tally.vote("legal-1", True)


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
    tally = Tally(policy)
    tally.add_slot("c1", "comms")  # the other approvers are off-hours
    for role, missing in shortfall(policy, tally.slots).items():
        for n in range(missing):
            tally.add_slot(f"on-call-{role}-{n}", role)
    assert evaluate(policy, tally.slots) is Outcome.pending
    assert tally.check() is Outcome.pending


# --- votes the node refuses ----------------------------------------------------------------

def test_no_vote_after_the_end_and_the_refused_vote_changes_nothing() -> None:
    tally = node(Policy(mode="any"), None, None)
    tally.vote("s0", True)
    before = dict(tally.slots)
    with pytest.raises(QuorumError):
        tally.vote("s1", False)
    assert tally.slots == before
    assert tally.outcome is Outcome.approved


def test_unknown_slot_and_double_vote_are_refused() -> None:
    tally = holding_statement_node()
    with pytest.raises(QuorumError):
        tally.vote("nobody", True)
    tally.vote("comms-1", True)
    with pytest.raises(QuorumError):
        tally.vote("comms-1", False)
    assert tally.slots["comms-1"].vote is Vote.approved


# --- delegation -----------------------------------------------------------------------------

def test_delegation_moves_the_slot_and_keeps_the_node_pending() -> None:
    tally = holding_statement_node()
    tally.vote("comms-1", True)
    tally.remove_slot("legal-1")  # legal counsel is on a plane
    tally.add_slot("legal-deputy", "legal")
    assert tally.check() is Outcome.pending
    with pytest.raises(QuorumError):
        tally.vote("legal-1", True)  # the delegator's vote no longer counts
    tally.vote("comms-2", True)
    assert tally.vote("legal-deputy", True) is Outcome.approved


def test_only_open_slots_can_be_delegated() -> None:
    tally = holding_statement_node()
    tally.vote("comms-1", True)
    with pytest.raises(QuorumError):
        tally.remove_slot("comms-1")
    with pytest.raises(QuorumError):
        tally.remove_slot("nobody")
    assert tally.slots["comms-1"].vote is Vote.approved


def test_no_delegation_after_the_node_is_decided() -> None:
    tally = node(Policy(mode="any"), None, None)
    tally.vote("s0", True)
    with pytest.raises(QuorumError):
        tally.remove_slot("s1")
    assert "s1" in tally.slots  # a refused delegation leaves the node as it was
