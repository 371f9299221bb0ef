"""Unit tests of the incident aggregate (`domain.ledger.Ledger`), without Temporal.

Every time is pinned with an explicit datetime. The directory is the shared test directory
(`tests.factories`) plus an admin, a warehouse worker who may only report (and whom Lena
names as a deputy), and a relief comms lead on the comms on-call roster who is not a member
of the role.

At `WED_NOON` (Wednesday 2026-03-04 12:00 UTC) London is in working hours, New York (07:00)
and Singapore (20:00) are not; the rosters are in an even week, so `olga-oncall` covers
legal and `otto-oncall` covers comms.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest

from domain import errors
from domain.directory import Directory
from domain.effects import ProjectionBatch
from domain.incident import (
    CancelTaskRequest,
    DecideRequest,
    DelegateRequest,
    DirectorySnapshot,
    IncidentStatus,
    NodeState,
    PlaybookSnapshot,
    ReassignRequest,
    Report,
    ResolveRequest,
    StatusUpdateRequest,
    Task,
    TaskState,
)
from domain.ledger import Ledger, LedgerError
from domain.loader import sha256
from domain.playbook import Approval, Playbook
from domain.quorum import Outcome
from tests import factories
from tests.factories import person, viral_playbook

WED_NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
SAT_2AM = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)  # everyone with office hours is off
STEP = "holding-statement"
INCIDENT = "inc-ledger-test"
PUBLISH = "http://127.0.0.1:9/publish"
_ids = itertools.count(1)


def rid() -> str:
    return f"req-{next(_ids)}"


def ledger_directory() -> Directory:
    data = factories.directory().model_dump(mode="json")
    for p in data["people"]:
        if p["id"] == "lena-legal":
            p["deputies"] = ["vera-vp", "walt-warehouse"]
    data["people"] += [
        person("ada-admin", [], "UTC", hours=None, access=["admin"]),
        person("walt-warehouse", [], "Europe/London", access=["reporter"]),
        person("rita-relief", [], "UTC", hours=None),
    ]
    for roster in data["rosters"]:
        if roster["id"] == "comms-oncall":
            roster["members"] = ["otto-oncall", "rita-relief"]
    return Directory.model_validate(data)


def snapshot_of(data: dict[str, Any], directory: Directory, *, check: bool = True
                ) -> PlaybookSnapshot:
    """`check=False` skips the playbook checks, for nodes that validation would refuse."""
    if check:
        return factories.snapshot(data, directory)
    playbook = Playbook.model_validate(data)
    return PlaybookSnapshot(id=playbook.id, version=playbook.version,
                            sha256=sha256(playbook.model_dump_json().encode()),
                            definition=playbook)


def new_ledger(data: dict[str, Any] | None = None, at: datetime = WED_NOON, *,
               check: bool = True, legacy: bool = False) -> Ledger:
    """An incident as the workflow starts one today; `legacy` as incidents started before
    quorum widening and named tier approvers (the workflow's `workflow.patched` flags)."""
    directory = ledger_directory()
    snap = snapshot_of(data or viral_playbook(PUBLISH), directory, check=check)
    start = factories.start_input(
        snap, incident_id=INCIDENT, opening_report_id="report-1",
        directory=DirectorySnapshot(sha256=sha256(directory.model_dump_json().encode()),
                                    definition=directory))
    ledger = Ledger.open(start, at)
    ledger.widen_quorum = ledger.tier_names_person = ledger.one_vote_per_person = not legacy
    return ledger


def approval_of(ledger: Ledger, step_id: str = STEP) -> Approval:
    approval = ledger.playbook.step(step_id).approval
    assert approval is not None
    return approval


def opened(data: dict[str, Any] | None = None, at: datetime = WED_NOON, *,
           check: bool = True, step_id: str = STEP, legacy: bool = False
           ) -> tuple[Ledger, dict[str, str]]:
    """A ledger with the approval open and projected; and each holder's task id."""
    ledger = new_ledger(data, at, check=check, legacy=legacy)
    tasks = ledger.open_approval(step_id, approval_of(ledger, step_id), at,
                                 title="Holding statement", content="We are aware.")
    assert ledger.take_batch() is not None
    return ledger, {t.assignee: t.id for t in tasks}


def decide(ledger: Ledger, actor: str, task: str,
           decision: Literal["approve", "reject"] = "approve", *,
           at: datetime = WED_NOON, request_id: str | None = None, comment: str = "") -> Any:
    return ledger.decide(DecideRequest(request_id=request_id or rid(), actor=actor,
                                       task_id=task, decision=decision,
                                       comment=comment), at)


def delegate_req(actor: str, task: str, to: str) -> DelegateRequest:
    return DelegateRequest(request_id=rid(), actor=actor, task_id=task, to=to)


def node(ledger: Ledger, step_id: str = STEP) -> NodeState:
    found = ledger.node(step_id)
    assert found is not None
    return found


def states(ledger: Ledger, step_id: str = STEP) -> dict[str, TaskState]:
    return {t.assignee + "#" + t.id.rsplit(".", 1)[1]: t.state
            for t in ledger.node_tasks(step_id)}


def kinds_since(ledger: Ledger, seq: int) -> list[str]:
    return [e.kind for e in ledger.state.timeline if e.seq > seq]


@contextmanager
def nothing_changes(ledger: Ledger) -> Iterator[None]:
    """The block must leave the incident exactly as it was, with nothing to project."""
    ledger.take_batch()  # what changed before the block is not the block's doing
    before = ledger.state.model_dump(mode="json")
    yield
    assert ledger.state.model_dump(mode="json") == before
    assert ledger.take_batch() is None


def refused(ledger: Ledger, code: str, command: Callable[[], object],
            validate: Callable[[], None] | None = None) -> LedgerError:
    """`command` (and its validator twin) must be refused with `code`, changing nothing."""
    with nothing_changes(ledger):
        if validate is not None:
            with pytest.raises(LedgerError) as checked:
                validate()
            assert checked.value.code == code
        with pytest.raises(LedgerError) as raised:
            command()
    assert raised.value.code == code, raised.value.message
    return raised.value


class Projection:
    """A read model fed only by `take_batch`, like the Redis projection."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.nodes: dict[str, NodeState] = {}
        self.timeline_seqs: list[int] = []

    def apply(self, batch: ProjectionBatch | None) -> None:
        assert batch is not None
        self.tasks |= {t.id: t for t in batch.tasks}
        self.nodes |= {n.step_id: n for n in batch.nodes}
        self.timeline_seqs += [e.seq for e in batch.timeline]

    def equals(self, ledger: Ledger) -> bool:
        return (self.tasks == ledger.state.tasks and self.nodes == ledger.state.nodes
                and self.timeline_seqs == [e.seq for e in ledger.state.timeline])


# --- opening an approval ------------------------------------------------------------------

def test_opening_the_approval_gives_off_hours_approvers_on_call_stand_ins() -> None:
    ledger = new_ledger()
    tasks = ledger.open_approval(STEP, approval_of(ledger), WED_NOON, title="Holding statement",
                                 content="We are aware.")
    assert [(t.assignee, t.role, t.via, t.replaces) for t in tasks] == [
        ("lena-legal", "legal", "role", None),
        ("olga-oncall", "legal", "oncall", "leo-legal"),  # New York is asleep; olga covers
        ("cara-comms", "comms-lead", "role", None),
        ("otto-oncall", "comms-lead", "oncall", "colin-comms"),
        ("chloe-comms", "comms-lead", "role", None),
    ]
    assert all(t.state is TaskState.open and t.created_at == WED_NOON
               and t.deadline == WED_NOON + timedelta(hours=4) for t in tasks)
    assert len({t.id for t in tasks}) == 5
    state = node(ledger)
    assert state.outcome is Outcome.pending
    assert state.policy == "1 of legal AND 2 of comms-lead; veto: legal"
    assert state.deadline == WED_NOON + timedelta(hours=4)
    assert state.tiers_fired == [0, 0]
    created = [e.details for e in ledger.state.timeline if e.kind == "task_created"]
    assert created[1] == {"task_id": tasks[1].id, "node": STEP, "assignee": "olga-oncall",
                          "role": "legal", "via": "oncall", "replaces": "leo-legal"}
    # the notification for a stand-in goes out as it was assigned, not resolved again
    notified = ledger.assignments_of(tasks)
    assert (notified[1].person_id, notified[1].via, notified[1].replaces) == (
        "olga-oncall", "oncall", "leo-legal")


def test_at_night_a_short_role_is_topped_up_with_an_off_hours_member() -> None:
    ledger = new_ledger(at=SAT_2AM)
    tasks = ledger.open_approval(STEP, approval_of(ledger), SAT_2AM, title="t", content="c")
    # one on-call person per role would leave "2 of comms-lead" impossible
    assert [(t.assignee, t.role, t.via, t.replaces) for t in tasks] == [
        ("olga-oncall", "legal", "oncall", "lena-legal"),
        ("otto-oncall", "comms-lead", "oncall", "cara-comms"),
        ("cara-comms", "comms-lead", "role", None),
    ]
    topped_up = [e for e in ledger.state.timeline if e.details.get("assignee") == "cara-comms"]
    assert topped_up[0].details["reason"] == "needed for quorum although outside working hours"
    assert node(ledger).outcome is Outcome.pending


def test_an_approval_that_can_never_be_decided_ends_rejected_at_once() -> None:
    data = viral_playbook(PUBLISH)
    approval = data["steps"][2]["approval"]
    approval["require"] = [{"role": "legal", "min": 5}]  # only four people are in legal
    ledger = new_ledger(data, check=False)
    tasks = ledger.open_approval(STEP, approval_of(ledger), WED_NOON, title="t", content="c")
    assert tasks == []  # nobody is asked to vote on a dead node
    assert node(ledger).outcome is Outcome.rejected
    assert node(ledger).ended_at == WED_NOON
    assert set(states(ledger).values()) == {TaskState.cancelled}
    last = ledger.state.timeline[-1]
    assert (last.kind, last.details["reason"]) == ("node_outcome", "not enough approvers")


# --- escalation and the read model --------------------------------------------------------

def test_after_two_tiers_the_projection_carries_tiers_fired() -> None:
    """The read-model bug of issue 13: `tiers_fired` stayed [0, 0] in the projection."""
    ledger = new_ledger()
    projection = Projection()
    approval = approval_of(ledger)
    ledger.open_approval(STEP, approval, WED_NOON, title="t", content="c")
    projection.apply(ledger.take_batch())
    assert ledger.next_tier(STEP, approval) == (0, WED_NOON + timedelta(minutes=15))

    firing, waiting, added = ledger.fire_tier(STEP, approval, 0, WED_NOON + timedelta(
        minutes=15), title="t", content="c")
    assert (firing, added) == (1, [])
    assert waiting == ["lena-legal", "olga-oncall", "cara-comms", "otto-oncall", "chloe-comms"]
    batch = ledger.take_batch()
    assert batch is not None
    assert [(n.step_id, n.tiers_fired) for n in batch.nodes] == [(STEP, [1, 0])]
    assert batch.tasks == []
    projection.apply(batch)
    assert ledger.next_tier(STEP, approval) == (1, WED_NOON + timedelta(minutes=30))

    ledger.fire_tier(STEP, approval, 1, WED_NOON + timedelta(minutes=30), title="t",
                     content="c")
    batch = ledger.take_batch()
    assert batch is not None
    assert [(n.step_id, n.tiers_fired) for n in batch.nodes] == [(STEP, [1, 1])]
    projection.apply(batch)
    assert projection.nodes[STEP].tiers_fired == [1, 1]
    assert projection.equals(ledger)
    assert ledger.next_tier(STEP, approval) == (None, None)  # neither tier repeats
    escalations = [e for e in ledger.state.timeline if e.kind == "escalation"]
    assert [(e.actor, e.details["tier"], e.details["name"]) for e in escalations] == [
        ("playbook", 1, "tier 2"), ("playbook", 2, "tier 3")]


def exec_escalation_playbook(k: int, *people: str) -> dict[str, Any]:
    """k approvals from `people` (Lena and Cara by default) and whoever the exec tier adds;
    the tier repeats once."""
    data = viral_playbook(PUBLISH)
    data["steps"][2]["approval"] = {
        "title": "Sign-off", "content": "Please sign off.",
        "approvers": [{"person": p} for p in people or ("lena-legal", "cara-comms")],
        "quorum": {"k": k}, "deadline": "4h",
        "escalation": [{"name": "execs", "after": "15m", "add_approvers": [{"role": "exec"}],
                        "repeat": 1, "every": "15m"}],
    }
    return data


def test_an_escalation_tier_adds_approvers_who_can_decide_the_node() -> None:
    ledger, ids = opened(exec_escalation_playbook(k=2))
    approval = approval_of(ledger)
    at = WED_NOON + timedelta(minutes=15)
    _, waiting, added = ledger.fire_tier(STEP, approval, 0, at, title="t", content="c")
    assert waiting == ["lena-legal", "cara-comms"]
    # vera-vp is asleep in New York; eve-exec is the exec on call (and an exec herself)
    assert [(t.assignee, t.role, t.via, t.replaces) for t in added] == [
        ("eve-exec", "exec", "oncall", "vera-vp")]
    batch = ledger.take_batch()
    assert batch is not None
    assert {t.id for t in batch.tasks} == {added[0].id}
    assert [n.tiers_fired for n in batch.nodes] == [[1]]
    decide(ledger, "eve-exec", added[0].id, at=at)
    result = decide(ledger, "lena-legal", ids["lena-legal"], at=at)
    assert result.node.outcome is Outcome.approved
    assert states(ledger) == {"lena-legal#1": TaskState.approved,
                              "cara-comms#2": TaskState.cancelled,
                              "eve-exec#3": TaskState.approved}
    batch = ledger.take_batch()
    assert batch is not None
    assert {t.id for t in batch.tasks} == {ids["lena-legal"], ids["cara-comms"], added[0].id}
    assert [n.outcome for n in batch.nodes] == [Outcome.approved]


def test_a_repeating_tier_gives_no_second_vote_to_someone_who_voted() -> None:
    ledger, ids = opened(exec_escalation_playbook(3, "lena-legal", "cara-comms", "chloe-comms"))
    approval = approval_of(ledger)
    first = WED_NOON + timedelta(minutes=15)
    _, _, added = ledger.fire_tier(STEP, approval, 0, first, title="t", content="c")
    decide(ledger, "eve-exec", added[0].id, at=first)
    decide(ledger, "lena-legal", ids["lena-legal"], at=first)
    again = WED_NOON + timedelta(minutes=30)
    assert ledger.next_tier(STEP, approval) == (0, again)
    ledger.fire_tier(STEP, approval, 0, again, title="t", content="c")
    # 3 approvals are needed and only 2 people have approved: eve must not vote again
    assert "eve-exec" not in ledger.open_holders(STEP)


def test_a_tier_firing_after_the_node_ended_asks_nobody_to_vote() -> None:
    ledger, ids = opened(exec_escalation_playbook(k=1))
    decide(ledger, "lena-legal", ids["lena-legal"])
    assert node(ledger).outcome is Outcome.approved
    ledger.take_batch()
    with nothing_changes(ledger):
        _, _, added = ledger.fire_tier(STEP, approval_of(ledger), 0,
                                       WED_NOON + timedelta(minutes=15), title="t", content="c")
    assert added == []
    assert ledger.open_holders(STEP) == []


# --- decisions ----------------------------------------------------------------------------

def test_one_legal_and_two_comms_approve_the_statement_and_the_rest_are_cancelled() -> None:
    ledger, ids = opened()
    projection = Projection()
    first = decide(ledger, "cara-comms", ids["cara-comms"], comment="fine by me")
    assert first.node.outcome is Outcome.pending
    assert (first.task.state, first.task.decided_by, first.task.comment) == (
        TaskState.approved, "cara-comms", "fine by me")
    batch = ledger.take_batch()
    assert batch is not None
    assert ([t.id for t in batch.tasks], batch.nodes) == ([ids["cara-comms"]], [])
    projection.apply(batch)

    decide(ledger, "lena-legal", ids["lena-legal"])
    last = decide(ledger, "chloe-comms", ids["chloe-comms"],
                  at=WED_NOON + timedelta(minutes=5))
    assert last.node.outcome is Outcome.approved
    assert last.node.ended_at == WED_NOON + timedelta(minutes=5)
    assert states(ledger) == {
        "lena-legal#1": TaskState.approved, "olga-oncall#2": TaskState.cancelled,
        "cara-comms#3": TaskState.approved, "otto-oncall#4": TaskState.cancelled,
        "chloe-comms#5": TaskState.approved}
    batch = ledger.take_batch()
    assert batch is not None
    assert {t.id for t in batch.tasks} == {ids[p] for p in (
        "lena-legal", "chloe-comms", "olga-oncall", "otto-oncall")}
    assert [n.outcome for n in batch.nodes] == [Outcome.approved]
    projection.apply(batch)
    outcome = ledger.state.timeline[-1]
    assert (outcome.kind, outcome.details["outcome"], outcome.details["reason"]) == (
        "node_outcome", "approved", "approve by chloe-comms")
    assert outcome.details["approved"] == [ids["lena-legal"], ids["cara-comms"],
                                           ids["chloe-comms"]]


def test_a_legal_reject_vetoes_the_statement() -> None:
    ledger, ids = opened()
    decide(ledger, "cara-comms", ids["cara-comms"])
    decide(ledger, "chloe-comms", ids["chloe-comms"])
    result = decide(ledger, "olga-oncall", ids["olga-oncall"], "reject", comment="no")
    assert result.node.outcome is Outcome.vetoed
    assert result.task.state is TaskState.rejected
    assert ledger.open_holders(STEP) == []


def test_votes_the_node_refuses_change_nothing() -> None:
    ledger, ids = opened()
    refused(ledger, errors.TASK_NOT_FOUND, lambda: decide(ledger, "cara-comms", "nope"))
    refused(ledger, errors.NOT_YOUR_TASK,  # somebody else's task
            lambda: decide(ledger, "chloe-comms", ids["cara-comms"]))
    refused(ledger, errors.NOT_YOUR_TASK,  # a stranger to the incident
            lambda: decide(ledger, "walt-warehouse", ids["cara-comms"]))
    decide(ledger, "cara-comms", ids["cara-comms"])
    ledger.take_batch()
    again = DecideRequest(request_id=rid(), actor="cara-comms", task_id=ids["cara-comms"],
                          decision="reject")
    error = refused(ledger, errors.TASK_CLOSED, lambda: ledger.decide(again, WED_NOON),
                    lambda: ledger.validate_decision(again))  # one vote per task
    assert "approved" in error.message
    assert ledger.state.tasks[ids["cara-comms"]].state is TaskState.approved


def test_no_vote_after_the_node_has_ended() -> None:
    ledger, ids = opened()
    decide(ledger, "olga-oncall", ids["olga-oncall"], "reject")  # veto
    ledger.take_batch()
    late = DecideRequest(request_id=rid(), actor="cara-comms", task_id=ids["cara-comms"],
                         decision="approve")
    refused(ledger, errors.TASK_CLOSED, lambda: ledger.decide(late, WED_NOON),
            lambda: ledger.validate_decision(late))
    assert node(ledger).outcome is Outcome.vetoed


# --- deadline -----------------------------------------------------------------------------

def test_the_deadline_expires_a_pending_node_and_its_open_tasks() -> None:
    ledger, ids = opened()
    decide(ledger, "cara-comms", ids["cara-comms"])
    deadline = WED_NOON + timedelta(hours=4)
    ledger.expire_node(STEP, deadline)
    assert (node(ledger).outcome, node(ledger).ended_at) == (Outcome.expired, deadline)
    assert states(ledger)["cara-comms#3"] is TaskState.approved
    assert [s for k, s in states(ledger).items() if k != "cara-comms#3"] == [
        TaskState.expired] * 4
    ledger.take_batch()
    refused(ledger, errors.TASK_CLOSED, lambda: decide(ledger, "lena-legal", ids["lena-legal"]))


def test_a_decided_node_never_expires() -> None:
    ledger, ids = opened()
    for holder in ("lena-legal", "cara-comms", "chloe-comms"):
        decide(ledger, holder, ids[holder])
    ledger.take_batch()
    with nothing_changes(ledger):
        ledger.expire_node(STEP, WED_NOON + timedelta(hours=4))
    assert node(ledger).outcome is Outcome.approved


# --- delegation ---------------------------------------------------------------------------

def test_a_member_of_the_role_can_take_the_vote_and_the_delegator_no_longer_counts() -> None:
    ledger, ids = opened()
    at = WED_NOON + timedelta(minutes=3)
    req = DelegateRequest(request_id=rid(), actor="lena-legal", task_id=ids["lena-legal"],
                          to="gabe-counsel", comment="on a plane")
    ledger.validate_delegation(req)
    result = ledger.delegate(req, at)
    old, new = result.task, result.new_task
    assert (old.state, old.delegated_to, old.decided_by, old.comment) == (
        TaskState.delegated, new.id, "lena-legal", "on a plane")
    assert (new.assignee, new.role, new.via, new.delegated_from, new.state) == (
        "gabe-counsel", "legal", "delegation", old.id, TaskState.open)
    assert node(ledger).outcome is Outcome.pending
    entry = ledger.state.timeline[-1]
    assert (entry.kind, entry.actor, entry.details["from"], entry.details["to"]) == (
        "delegation", "lena-legal", "lena-legal", "gabe-counsel")
    batch = ledger.take_batch()
    assert batch is not None
    assert {t.id for t in batch.tasks} == {old.id, new.id}
    assert batch.nodes == []

    error = refused(ledger, errors.TASK_CLOSED,
                    lambda: decide(ledger, "lena-legal", ids["lena-legal"]))
    assert "delegated to gabe-counsel" in error.message
    decide(ledger, "cara-comms", ids["cara-comms"])
    decide(ledger, "chloe-comms", ids["chloe-comms"])
    # the delegate may decide through the original task id, and their vote counts as legal
    assert decide(ledger, "gabe-counsel", ids["lena-legal"]).node.outcome is Outcome.approved


@pytest.mark.parametrize(("holder", "to", "why"), [
    ("cara-comms", "rita-relief", "on the comms on-call roster"),
    ("lena-legal", "vera-vp", "named as Lena's deputy"),
    ("lena-legal", "leo-legal", "a member of legal (asleep, but no matter)"),
])
def test_who_may_take_a_delegated_vote(holder: str, to: str, why: str) -> None:
    ledger, ids = opened()
    result = ledger.delegate(delegate_req(holder, ids[holder], to), WED_NOON)
    assert result.new_task.assignee == to, why
    assert decide(ledger, to, result.new_task.id).task.state is TaskState.approved


def test_a_deputy_of_the_first_holder_can_take_the_vote_from_a_delegate() -> None:
    ledger, ids = opened()
    passed = ledger.delegate(delegate_req("lena-legal", ids["lena-legal"], "leo-legal"),
                             WED_NOON)
    onward = ledger.delegate(delegate_req("leo-legal", passed.new_task.id, "vera-vp"), WED_NOON)
    assert (onward.new_task.assignee, onward.new_task.role) == ("vera-vp", "legal")


@pytest.mark.parametrize(("holder", "to", "message"), [
    ("lena-legal", "walt-warehouse", "can't vote for role legal"),  # deputy, reporter only
    ("cara-comms", "walt-warehouse", "can't vote for role comms-lead"),
    ("cara-comms", "vera-vp", "can't vote for role comms-lead"),  # approver, not in comms
    ("cara-comms", "sam-social", "can't vote for role comms-lead"),  # communicator
    ("cara-comms", "ada-admin", "can't vote for role comms-lead"),
    ("cara-comms", "nobody-at-all", "unknown person"),
    ("cara-comms", "cara-comms", "delegated to its holder"),
    ("cara-comms", "chloe-comms", "already holds a task"),
])
def test_a_vote_can_only_go_to_someone_who_could_cast_it(holder: str, to: str,
                                                         message: str) -> None:
    ledger, ids = opened()
    req = delegate_req(holder, ids[holder], to)
    error = refused(ledger, errors.INVALID_DELEGATE, lambda: ledger.delegate(req, WED_NOON),
                    lambda: ledger.validate_delegation(req))
    assert message in error.message
    assert ledger.state.tasks[ids[holder]].state is TaskState.open


def test_only_the_holder_of_an_open_task_can_delegate_it() -> None:
    ledger, ids = opened()
    refused(ledger, errors.NOT_YOUR_TASK, lambda: ledger.delegate(
        delegate_req("chloe-comms", ids["cara-comms"], "rita-relief"), WED_NOON))
    refused(ledger, errors.TASK_NOT_FOUND, lambda: ledger.delegate(
        delegate_req("cara-comms", "no-such-task", "rita-relief"), WED_NOON))
    decide(ledger, "cara-comms", ids["cara-comms"])
    ledger.take_batch()
    refused(ledger, errors.TASK_CLOSED, lambda: ledger.delegate(  # already voted
        delegate_req("cara-comms", ids["cara-comms"], "rita-relief"), WED_NOON))
    assert ledger.state.tasks[ids["cara-comms"]].state is TaskState.approved


def test_no_delegation_after_the_node_is_decided() -> None:
    ledger, ids = opened()
    decide(ledger, "lena-legal", ids["lena-legal"], "reject")
    ledger.take_batch()
    refused(ledger, errors.TASK_CLOSED, lambda: ledger.delegate(
        delegate_req("chloe-comms", ids["chloe-comms"], "rita-relief"), WED_NOON))


def test_a_vote_cannot_go_to_someone_who_already_voted_in_the_approval() -> None:
    ledger, ids = opened()
    decide(ledger, "cara-comms", ids["cara-comms"])
    ledger.take_batch()
    # otherwise cara's second approval would meet "2 of comms-lead" on her own
    refused(ledger, errors.INVALID_DELEGATE, lambda: ledger.delegate(
        delegate_req("chloe-comms", ids["chloe-comms"], "cara-comms"), WED_NOON))


# --- admin reassign and cancel ------------------------------------------------------------

@pytest.mark.parametrize("actor", ["vera-vp", "sam-social", "olga-oncall", "nobody-at-all"])
def test_only_an_admin_may_reassign_or_cancel(actor: str) -> None:
    """A leader, a communicator, the holder herself and a stranger are all refused."""
    ledger, ids = opened()
    move = ReassignRequest(request_id=rid(), actor=actor, task_id=ids["olga-oncall"],
                           to="gabe-counsel", reason="olga is ill")
    refused(ledger, errors.FORBIDDEN, lambda: ledger.reassign(move, WED_NOON),
            lambda: ledger.validate_reassign(move))
    stop = CancelTaskRequest(request_id=rid(), actor=actor, task_id=ids["olga-oncall"],
                             reason="olga is ill")
    refused(ledger, errors.FORBIDDEN, lambda: ledger.cancel_task(stop, WED_NOON),
            lambda: ledger.validate_cancel_task(stop))
    assert ledger.state.tasks[ids["olga-oncall"]].state is TaskState.open


def test_an_admin_reassigns_an_open_task_with_a_reason_on_the_timeline() -> None:
    ledger, ids = opened()
    at = WED_NOON + timedelta(minutes=7)
    req = ReassignRequest(request_id=rid(), actor="ada-admin", task_id=ids["olga-oncall"],
                          to="gabe-counsel", reason="olga is ill")
    ledger.validate_reassign(req)
    result = ledger.reassign(req, at)
    assert (result.task.state, result.task.decided_by, result.task.comment) == (
        TaskState.delegated, "ada-admin", "olga is ill")
    assert (result.new_task.assignee, result.new_task.role, result.new_task.via) == (
        "gabe-counsel", "legal", "reassignment")
    entry = ledger.state.timeline[-1]
    assert (entry.kind, entry.actor, entry.at) == ("task_reassigned", "ada-admin", at)
    assert {k: entry.details[k] for k in ("from", "to", "reason")} == {
        "from": "olga-oncall", "to": "gabe-counsel", "reason": "olga is ill"}
    ledger.take_batch()
    refused(ledger, errors.TASK_CLOSED, lambda: decide(ledger, "olga-oncall",
                                                       ids["olga-oncall"]))
    assert decide(ledger, "gabe-counsel", result.new_task.id).task.role == "legal"
    # an admin can't hand a vote to someone who couldn't cast it either
    bad = ReassignRequest(request_id=rid(), actor="ada-admin", task_id=ids["cara-comms"],
                          to="walt-warehouse", reason="?")
    refused(ledger, errors.INVALID_DELEGATE, lambda: ledger.reassign(bad, at),
            lambda: ledger.validate_reassign(bad))


@pytest.mark.parametrize("legacy", [False, True], ids=["today", "started-before-widening"])
def test_an_admin_cancels_a_task_with_a_reason_and_the_node_is_judged_again(
        legacy: bool) -> None:
    ledger, ids = opened(legacy=legacy)
    decide(ledger, "cara-comms", ids["cara-comms"])
    decide(ledger, "chloe-comms", ids["chloe-comms"], "reject")
    assert node(ledger).outcome is Outcome.pending  # otto could still make it 2 of comms
    ledger.take_batch()
    at = WED_NOON + timedelta(minutes=9)
    req = CancelTaskRequest(request_id=rid(), actor="ada-admin", task_id=ids["otto-oncall"],
                            reason="otto left the company")
    ledger.validate_cancel_task(req)
    result = ledger.cancel_task(req, at)
    assert (result.task.state, result.task.decided_by, result.task.comment) == (
        TaskState.cancelled, "ada-admin", "otto left the company")
    cancelled = next(e for e in ledger.state.timeline if e.kind == "task_cancelled"
                     and e.details["task_id"] == ids["otto-oncall"])
    assert (cancelled.actor, cancelled.at, cancelled.details["reason"]) == (
        "ada-admin", at, "otto left the company")
    if legacy:  # 2 of comms-lead is out of reach now: the statement fails
        assert result.node.outcome is Outcome.rejected
        assert ledger.state.timeline[-1].details["reason"] == "task cancelled by ada-admin"
    else:  # a comms lead who was not asked (off-hours) is asked before it fails
        assert result.node.outcome is Outcome.pending
        assert ledger.open_holders(STEP) == ["lena-legal", "olga-oncall", "colin-comms"]
        assert [t.assignee for t in ledger.take_widened()] == ["colin-comms"]
    refused(ledger, errors.TASK_CLOSED, lambda: ledger.cancel_task(
        CancelTaskRequest(request_id=rid(), actor="ada-admin", task_id=ids["cara-comms"],
                          reason="too late"), at))


def test_cancelling_the_last_missing_vote_approves_an_all_quorum() -> None:
    data = viral_playbook(PUBLISH)
    data["steps"][2]["approval"] = {
        "content": "c", "approvers": [{"person": "lena-legal"}, {"person": "cara-comms"}],
        "quorum": "all"}
    ledger, ids = opened(data)
    decide(ledger, "lena-legal", ids["lena-legal"])
    result = ledger.cancel_task(CancelTaskRequest(
        request_id=rid(), actor="ada-admin", task_id=ids["cara-comms"], reason="on leave"),
        WED_NOON)
    assert result.node.outcome is Outcome.approved


# --- idempotent commands ------------------------------------------------------------------

def test_a_repeated_decision_returns_the_first_result_and_changes_nothing() -> None:
    ledger, ids = opened()
    req = DecideRequest(request_id="click-1", actor="cara-comms", task_id=ids["cara-comms"],
                        decision="approve")
    first = ledger.decide(req, WED_NOON)
    ledger.take_batch()
    with nothing_changes(ledger):
        ledger.validate_decision(req)
        assert ledger.decide(req, WED_NOON + timedelta(minutes=1)) == first
    different = req.model_copy(update={"decision": "reject"})
    refused(ledger, errors.REQUEST_CONFLICT, lambda: ledger.decide(different, WED_NOON),
            lambda: ledger.validate_decision(different))
    # still the first answer after the node and the incident have ended
    decide(ledger, "olga-oncall", ids["olga-oncall"], "reject")
    ledger.resolve_incident(ResolveRequest(request_id=rid(), actor="sam-social",
                                           summary="done"), WED_NOON)
    ledger.take_batch()
    with nothing_changes(ledger):
        ledger.validate_decision(req)
        assert ledger.decide(req, WED_NOON) == first


def test_repeated_delegation_status_update_and_resolution() -> None:
    ledger, ids = opened()
    hand_on = DelegateRequest(request_id="d-1", actor="cara-comms", task_id=ids["cara-comms"],
                              to="rita-relief")
    status = StatusUpdateRequest(request_id="s-1", actor="sam-social", message="On it")
    resolve = ResolveRequest(request_id="r-1", actor="sam-social", summary="Posted")
    commands: list[tuple[Callable[[], Any], Callable[[], Any], Callable[[], None]]] = [
        (lambda: ledger.delegate(hand_on, WED_NOON),
         lambda: ledger.delegate(hand_on.model_copy(update={"to": "colin-comms"}), WED_NOON),
         lambda: ledger.validate_delegation(hand_on.model_copy(update={"comment": "x"}))),
        (lambda: ledger.post_status_update(status, WED_NOON),
         lambda: ledger.post_status_update(status.model_copy(update={"message": "Hm"}),
                                           WED_NOON),
         lambda: ledger.validate_status_update(status.model_copy(update={"actor": "ada-admin"}))),
        (lambda: ledger.resolve_incident(resolve, WED_NOON),
         lambda: ledger.resolve_incident(resolve.model_copy(update={"summary": "?"}), WED_NOON),
         lambda: ledger.validate_resolve(resolve.model_copy(update={"summary": "?"}))),
    ]
    for run, conflicting, validate_conflicting in commands:
        first = run()
        ledger.take_batch()
        with nothing_changes(ledger):
            assert run() == first
        refused(ledger, errors.REQUEST_CONFLICT, conflicting, validate_conflicting)
    assert [e.kind for e in ledger.state.timeline].count("status_update") == 1
    assert ledger.incident.status is IncidentStatus.resolved


def test_a_refused_command_is_not_remembered() -> None:
    ledger, ids = opened()
    req = DelegateRequest(request_id="d-2", actor="lena-legal", task_id=ids["lena-legal"],
                          to="walt-warehouse")
    refused(ledger, errors.INVALID_DELEGATE, lambda: ledger.delegate(req, WED_NOON))
    # the same request id may be used again for a corrected request
    fixed = req.model_copy(update={"to": "vera-vp"})
    assert ledger.delegate(fixed, WED_NOON).new_task.assignee == "vera-vp"


def test_a_report_is_attached_once() -> None:
    ledger = new_ledger()
    ledger.take_batch()
    report = Report(id="report-2", summary="Also on TV", reported_by="walt-warehouse")
    assert ledger.add_report(report, WED_NOON) is True
    assert ledger.incident.reports == 2
    ledger.take_batch()
    with nothing_changes(ledger):
        assert ledger.add_report(report, WED_NOON) is False
    with nothing_changes(ledger):  # the opening report is already there too
        assert ledger.add_report(report.model_copy(update={"id": "report-1"}), WED_NOON) is False
    assert ledger.incident.reports == 2


# --- resolving ----------------------------------------------------------------------------

def test_resolving_cancels_open_approvals_and_closes_the_incident() -> None:
    ledger, ids = opened()
    decide(ledger, "cara-comms", ids["cara-comms"])
    ledger.take_batch()
    lena = ResolveRequest(request_id=rid(), actor="lena-legal", summary="done")
    refused(ledger, errors.FORBIDDEN, lambda: ledger.resolve_incident(lena, WED_NOON),
            lambda: ledger.validate_resolve(lena))
    at = WED_NOON + timedelta(hours=1)
    incident = ledger.resolve_incident(
        ResolveRequest(request_id=rid(), actor="sam-social", summary="Apology posted"), at)
    assert (incident.status, incident.resolved_at, incident.resolved_by,
            incident.resolution_summary) == (IncidentStatus.resolved, at, "sam-social",
                                             "Apology posted")
    assert (node(ledger).outcome, node(ledger).ended_at) == ("cancelled", at)
    assert states(ledger)["cara-comms#3"] is TaskState.approved
    assert [s for k, s in states(ledger).items() if k != "cara-comms#3"] == [
        TaskState.cancelled] * 4
    outcome, resolved = ledger.state.timeline[-2:]
    assert (outcome.kind, outcome.details["reason"]) == ("node_outcome", "incident resolved")
    assert (resolved.kind, resolved.actor, resolved.details) == (
        "resolved", "sam-social", {"summary": "Apology posted"})
    batch = ledger.take_batch()
    assert batch is not None
    assert batch.incident.status is IncidentStatus.resolved
    assert len(batch.tasks) == 4 and [n.outcome for n in batch.nodes] == ["cancelled"]

    refused(ledger, errors.INCIDENT_CLOSED, lambda: decide(ledger, "lena-legal",
                                                           ids["lena-legal"]))
    refused(ledger, errors.INCIDENT_CLOSED, lambda: ledger.add_report(
        Report(id="late", summary="more", reported_by="walt-warehouse"), at))
    refused(ledger, errors.INCIDENT_CLOSED, lambda: ledger.post_status_update(
        StatusUpdateRequest(request_id=rid(), actor="sam-social", message="hi"), at))
    refused(ledger, errors.INCIDENT_CLOSED, lambda: ledger.resolve_incident(
        ResolveRequest(request_id=rid(), actor="ada-admin", summary="again"), at))


def test_resolving_leaves_a_decided_approval_as_it_was() -> None:
    ledger, ids = opened()
    decide(ledger, "lena-legal", ids["lena-legal"], "reject")
    ended = node(ledger).model_copy()
    ledger.resolve_incident(ResolveRequest(request_id=rid(), actor="ada-admin",
                                           summary="done"), WED_NOON + timedelta(hours=1))
    assert node(ledger) == ended
    assert node(ledger).outcome is Outcome.vetoed


# --- projection and continue-as-new -------------------------------------------------------

def test_a_batch_after_a_new_run_carries_everything() -> None:
    ledger, ids = opened()
    decide(ledger, "cara-comms", ids["cara-comms"])
    ledger.take_batch()
    assert ledger.take_batch() is None
    directory = ledger_directory()
    start = factories.start_input(
        PlaybookSnapshot(id="viral-complaint", version=1, sha256="x", definition=ledger.playbook),
        incident_id=INCIDENT, opening_report_id="report-1", state=ledger.state,
        directory=DirectorySnapshot(sha256="y", definition=directory))
    continued = Ledger.open(start, WED_NOON + timedelta(days=1))
    projection = Projection()
    projection.apply(continued.take_batch())
    assert projection.equals(continued)
    assert [e.kind for e in continued.state.timeline].count("opened") == 1
