"""IncidentWorkflow on the time-skipping server: BRIEF scenarios 1, 2, 4 and 6 and the
handler rules (who may decide, idempotent requests, deadlines, reminders, resolution)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from domain.incident import (
    DelegateRequest,
    IncidentFinal,
    Report,
    ResolveRequest,
    StatusUpdateRequest,
)
from domain.playbook import Severity
from readmodel.reader import ReadModel
from tests.clock import EVEN_WEEK, PINNED_TODAYS
from tests.factories import snapshot, viral_playbook
from tests.workflow_harness import Harness, eventually, fresh_time_env, harness
from workflows.incident import ALL_PATCHES_OF_WAVE_3, IncidentWorkflow


@pytest.fixture
def today() -> datetime:
    """The pinned "today" a test starts from; date-sensitive tests parametrize it."""
    return EVEN_WEEK


@pytest.fixture
async def h(redis_url: str, today: datetime) -> AsyncIterator[Harness]:
    # A server per test: a time-skipping server shared across tests sometimes stays
    # locked after a terminated workflow, and its later sleeps then run in real time.
    async with fresh_time_env() as env, harness(env, redis_url, today) as h:
        yield h


def error_type(exc: WorkflowUpdateFailedError) -> str | None:
    cause = exc.cause
    return cause.type if isinstance(cause, ApplicationError) else None


async def resolve(h: Harness, handle: Any, actor: str = "sam-social") -> IncidentFinal:
    req = ResolveRequest(request_id=uuid.uuid4().hex, actor=actor, summary="Handled")
    await handle.execute_update(IncidentWorkflow.resolve, req)
    final: IncidentFinal = await asyncio.wait_for(handle.result(), 30)
    return final


async def test_quorum_met_early_publishes_and_cancels_the_other_tasks(h: Harness) -> None:
    """Scenario 1, Friday 17:40 London: 1 legal + 2 comms approve; the rest is cancelled."""
    await h.advance_to("fri", 17, 40, "Europe/London")
    handle = await h.start(snapshot(viral_playbook(h.publish.url("/publish"))))
    social = await h.entries(handle, "notified")
    assert social[0].details["to"] == "sam-social"
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    legal = [t for t in tasks if t.role == "legal"]
    comms = [t for t in tasks if t.role == "comms-lead"]
    assert len(legal) >= 2 and len(comms) >= 3

    first = await h.decide(handle, legal[0], "approve", comment="fine by legal")
    assert first.node.outcome == "pending"
    await h.decide(handle, comms[0], "approve")
    result = await h.decide(handle, comms[1], "approve")

    assert result.node.outcome == "approved"
    assert result.node.title == "Holding statement: Viral complaint about cold pizza"
    view = await h.state(handle)
    assert {t.title for t in view.tasks} == {result.node.title}
    others = [t for t in view.tasks if t.id not in {legal[0].id, comms[0].id, comms[1].id}]
    assert others and all(t.state == "cancelled" for t in others)
    published = await eventually(lambda: _count(h), lambda n: n >= 1)
    assert published == 1
    assert h.publish.requests[0].json()["text"].startswith("We are aware of posts about")
    timeline = await h.entries(handle, "action_run")
    kinds = [e.kind for e in await h.timeline(handle)]
    assert kinds.count("task_cancelled") == len(others)
    assert kinds.index("node_outcome") < kinds.index("action_run")
    assert [e.seq for e in timeline] == sorted(e.seq for e in timeline)


async def _count(h: Harness) -> int:
    return h.publish.count


async def test_legal_reject_vetoes_even_after_comms_approved(h: Harness) -> None:
    await h.advance_to("thu", 15, 0)
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    comms = [t for t in tasks if t.role == "comms-lead"]
    legal = [t for t in tasks if t.role == "legal"]
    await h.decide(handle, comms[0], "approve")
    await h.decide(handle, comms[1], "approve")
    result = await h.decide(handle, legal[0], "reject", comment="Admits liability")

    assert result.node.outcome == "vetoed"
    view = await h.state(handle)
    assert all(t.state in ("approved", "rejected", "cancelled") for t in view.tasks)
    await eventually(lambda: h.timeline(handle),
                     lambda tl: any(e.details.get("step") == "tell-comms" for e in tl))
    assert h.publish.count == 0  # nothing published after a veto
    with pytest.raises(WorkflowUpdateFailedError) as exc:  # no vote after the end
        await h.decide(handle, comms[2], "approve")
    assert error_type(exc.value) == "TaskClosed"


async def test_no_quorum_escalates_to_tier_2_at_15m_and_tier_3_at_30m(h: Harness) -> None:
    await h.advance_to("wed", 15, 0)
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    await h.advance(timedelta(minutes=14))
    assert not [e for e in await h.timeline(handle) if e.kind == "escalation"]

    await h.advance(timedelta(minutes=2))
    tier2 = await h.entries(handle, "escalation")
    assert tier2[0].details["tier"] == 1 and tier2[0].details["name"] == "tier 2"
    reached = await eventually(
        lambda: h.timeline(handle),
        lambda tl: {"vera-vp", "gabe-counsel"} <= {e.details.get("to") for e in tl
                                                   if e.details.get("purpose") == "escalation"})
    assert reached

    await h.advance(timedelta(minutes=15))
    both = await h.entries(handle, "escalation", at_least=2)
    assert both[1].details["name"] == "tier 3"
    opened = (await h.state(handle)).nodes[0].opened_at
    fired_after = [round((e.at - opened).total_seconds()) for e in both]
    assert fired_after == [15 * 60, 30 * 60]
    await eventually(lambda: h.timeline(handle), lambda tl: any(
        e.details.get("purpose") == "escalation" and e.details.get("to") == "eve-exec"
        for e in tl))


@pytest.mark.parametrize("today", PINNED_TODAYS)
async def test_saturday_0200_off_hours_approvers_are_replaced_by_on_call(h: Harness) -> None:
    """Scenario 2: nobody in London or New York is in hours; on-call covers, quorum stays
    possible, and the clock keeps running through the weekend."""
    await h.advance_to("sat", 2, 0, "Europe/London")
    handle = await h.start(snapshot(viral_playbook(h.publish.url())),
                           severity=Severity.critical)
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 3)
    by_person = {t.assignee: t for t in tasks}
    assert by_person["olga-oncall"].via == "oncall" and by_person["olga-oncall"].role == "legal"
    assert by_person["otto-oncall"].via == "oncall"
    assert not {"lena-legal", "leo-legal", "gabe-counsel"} & set(by_person)
    comms = [t for t in tasks if t.role == "comms-lead"]
    assert len(comms) == 2  # on-call plus one off-hours member so 2-of-comms stays possible
    timeline = await h.timeline(handle)
    created = [e for e in timeline if e.kind == "task_created"]
    assert any(e.details.get("replaces") == "lena-legal" for e in created)
    # the stand-in's message is recorded as the task was assigned, not re-resolved as direct
    def told_olga(tl: list[Any]) -> list[dict[str, Any]]:
        return [e.details for e in tl if e.kind == "notified"
                and e.details["purpose"] == "task" and e.details["to"] == "olga-oncall"]
    timeline = await eventually(lambda: h.timeline(handle), lambda tl: bool(told_olga(tl)))
    assert all(d["via"] == "oncall" and d["replaces"] for d in told_olga(timeline))
    # the social team has no on-call roster: its off-hours member is still reached
    assert any(e.kind == "notified" and e.details["to"] == "sam-social" for e in timeline)

    await h.advance(timedelta(minutes=16))  # weekend: escalation still fires
    await h.entries(handle, "escalation")
    for task in [by_person["olga-oncall"], *comms]:
        result = await h.decide(handle, task, "approve")
    assert result.node.outcome == "approved"


async def test_delegation_moves_the_task_and_records_who_to_whom(h: Harness) -> None:
    """Scenario 4: an approver on a plane delegates to a deputy."""
    await h.advance_to("tue", 15, 0)
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    lena = next(t for t in tasks if t.assignee == "lena-legal")

    req = DelegateRequest(request_id="d1", actor="lena-legal", task_id=lena.id,
                          to="vera-vp", comment="On a plane")
    moved = await handle.execute_update(IncidentWorkflow.delegate, req)
    assert moved.task.state == "delegated" and moved.task.delegated_to == moved.new_task.id
    assert moved.new_task.assignee == "vera-vp" and moved.new_task.role == "legal"
    entry = (await h.entries(handle, "delegation"))[0]
    assert entry.details["from"] == "lena-legal" and entry.details["to"] == "vera-vp"

    with pytest.raises(WorkflowUpdateFailedError) as exc:  # the delegator no longer decides
        await h.decide(handle, lena, "approve", actor="lena-legal")
    assert error_type(exc.value) == "TaskClosed"
    # the deputy may decide through the original task id too
    result = await h.decide(handle, lena, "approve", actor="vera-vp")
    assert result.task.id == moved.new_task.id and result.task.state == "approved"
    again = await handle.execute_update(IncidentWorkflow.delegate, req)  # same request id
    assert again.new_task.id == moved.new_task.id


async def test_editing_a_playbook_mid_incident_keeps_the_running_version(h: Harness) -> None:
    """Scenario 6: the running incident keeps v1; a new one gets v2."""
    await h.advance_to("mon", 15, 0)
    v1 = snapshot(viral_playbook(h.publish.url(), version=1, content="Version one text"))
    v2 = snapshot(viral_playbook(h.publish.url(), version=2, content="Version two text"))
    running = await h.start(v1)
    await h.tasks_when(running, lambda ts: len(ts) >= 5)
    newer = await h.start(v2)
    new_tasks = await h.tasks_when(newer, lambda ts: len(ts) >= 5)

    old_view = await h.state(running)
    assert old_view.incident.playbook.version == 1
    assert old_view.incident.playbook.sha256 == v1.sha256 != v2.sha256
    assert {t.content for t in old_view.tasks} == {"Version one text"}
    assert {t.content for t in new_tasks} == {"Version two text"}
    opened = (await h.timeline(running))[0]
    assert opened.kind == "opened" and opened.details["playbook_version"] == 1
    legal = next(t for t in old_view.tasks if t.role == "legal")
    comms = [t for t in old_view.tasks if t.role == "comms-lead"][:2]
    for task in [legal, *comms]:
        await h.decide(running, task, "approve")
    await eventually(lambda: _count(h), lambda n: n == 1)
    assert h.publish.requests[0].json()["text"] == "Version one text"


async def test_a_repeated_request_id_returns_the_first_result(h: Harness) -> None:
    await h.advance_to("mon", 15, 0)
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    comms = next(t for t in tasks if t.role == "comms-lead")
    first = await h.decide(handle, comms, "approve", request_id="same", comment="ok")
    again = await h.decide(handle, comms, "approve", request_id="same", comment="ok")
    assert again == first
    decisions = [e for e in await h.timeline(handle) if e.kind == "decision"]
    assert len(decisions) == 1
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await h.decide(handle, comms, "reject", request_id="same")
    assert error_type(exc.value) == "RequestConflict"


async def test_only_the_assignee_decides_an_open_task(h: Harness) -> None:
    await h.advance_to("mon", 15, 0)
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    task = next(t for t in tasks if t.assignee == "cara-comms")
    cases = [
        (task, "colin-comms", "NotYourTask"),
        (task.model_copy(update={"id": f"{task.incident_id}.nope.9"}), "cara-comms",
         "TaskNotFound"),
    ]
    for target, actor, code in cases:
        with pytest.raises(WorkflowUpdateFailedError) as exc:
            await h.decide(handle, target, "approve", actor=actor)
        assert error_type(exc.value) == code
    await h.decide(handle, task, "reject")
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await h.decide(handle, task, "approve")
    assert error_type(exc.value) == "TaskClosed"
    assert [e.kind for e in await h.timeline(handle)].count("decision") == 1

    final = await resolve(h, handle)
    assert final.view.incident.status == "resolved"
    with pytest.raises((WorkflowUpdateFailedError, RPCError)):  # closed: no more decisions
        await h.decide(handle, tasks[1], "approve")


async def test_status_updates_and_resolve_need_a_communicator(h: Harness) -> None:
    await h.advance_to("mon", 15, 0)
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await handle.execute_update(IncidentWorkflow.resolve, ResolveRequest(
            request_id="r1", actor="cara-comms", summary="I am only an approver"))
    assert error_type(exc.value) == "Forbidden"
    entry = await handle.execute_update(IncidentWorkflow.post_status_update, StatusUpdateRequest(
        request_id="s1", actor="sam-social", message="Holding statement in review"))
    assert entry.kind == "status_update" and entry.actor == "sam-social"

    final = await resolve(h, handle)
    kinds = [e.kind for e in final.timeline]
    assert kinds[-1] == "resolved" and "status_update" in kinds
    assert all(t.state == "cancelled" for t in final.view.tasks)
    assert final.view.nodes[0].outcome == "cancelled"


async def test_reminders_recur_every_2h_until_resolved(h: Harness) -> None:
    await h.advance_to("mon", 15, 0)
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    await h.advance(timedelta(hours=4, minutes=1))
    reminders = await h.entries(handle, "reminder", at_least=2)
    opened = (await h.timeline(handle))[0].at
    assert [(r.at - opened).total_seconds() // 60 for r in reminders[:2]] == [120, 240]
    final = await resolve(h, handle)
    assert sum(e.kind == "reminder" for e in final.timeline) == 2


async def test_a_node_without_quorum_by_its_deadline_expires(h: Harness) -> None:
    await h.advance_to("mon", 15, 0)
    data = viral_playbook(h.publish.url())
    next(s for s in data["steps"] if s["id"] == "holding-statement")["approval"]["deadline"] = "1h"
    handle = await h.start(snapshot(data))
    await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    await h.advance(timedelta(hours=1, minutes=1))
    view = await eventually(lambda: h.state(handle), lambda v: v.nodes[0].outcome != "pending")
    assert view.nodes[0].outcome == "expired"
    assert all(t.state == "expired" for t in view.tasks)
    kinds = [e.kind for e in await h.timeline(handle)]
    assert kinds.count("escalation") == 2  # both tiers fired before the deadline


async def test_reports_are_added_once_per_report_id(h: Harness) -> None:
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    report = Report(id="r-1", summary="Seen it too", reported_by="ray-reporter")
    for _ in range(2):
        result = await handle.execute_update(IncidentWorkflow.report, report)
    assert result.created is False and result.incident.reports == 2
    await handle.signal(IncidentWorkflow.add_report,
                        Report(id="r-2", summary="Again", reported_by="ray-reporter"))
    view = await eventually(lambda: h.state(handle), lambda v: v.incident.reports == 3)
    assert view.incident.reports == 3


async def test_continue_as_new_carries_the_whole_state(h: Harness) -> None:
    await h.advance_to("mon", 15, 0)
    handle = await h.start(snapshot(viral_playbook(h.publish.url())),
                           continue_as_new_after_events=60)
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    first_run = (await handle.describe()).run_id
    for n in range(12):
        await h.update(handle, IncidentWorkflow.report, Report(
            id=f"r{n}", summary="more", reported_by="ray-reporter"))
    await eventually(handle.describe, lambda d: d.run_id != first_run)
    view = await h.state(handle)
    assert view.incident.reports == 13 and len(view.tasks) == len(tasks)
    legal = next(t for t in tasks if t.role == "legal")
    comms = [t for t in tasks if t.role == "comms-lead"][:2]
    for task in [legal, *comms]:
        result = await h.decide(handle, task, "approve")
    assert result.node.outcome == "approved"
    await eventually(lambda: _count(h), lambda n: n == 1)
    timeline = await h.timeline(handle)
    assert [e.seq for e in timeline] == list(range(1, len(timeline) + 1))
    assert sum(e.kind == "opened" for e in timeline) == 1


async def test_a_new_incident_records_one_patch_marker_for_all_of_wave_3(h: Harness) -> None:
    """History per incident: one marker (and one search-attribute upsert) stands for every
    earlier patch; older runs keep replaying their own markers (tests/test_replay.py)."""
    await h.advance_to("mon", 15, 0)
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    history = await handle.fetch_history()
    markers = [e.marker_recorded_event_attributes for e in history.events
               if e.HasField("marker_recorded_event_attributes")]
    patches = [json.loads(m.details["patch-data"].payloads[0].data)["id"] for m in markers]
    # wave 3's thirteen patches as one marker, and each later patch under its own name;
    # carrying the projection stands for answering first too (one marker, not two)
    assert patches == [ALL_PATCHES_OF_WAVE_3, "perf-notify-carries-projection"]
    assert sum(e.HasField("upsert_workflow_search_attributes_event_attributes")
               for e in history.events) == len(patches)


async def test_a_decision_answers_in_the_workflow_task_that_made_it(h: Harness) -> None:
    """A command costs one workflow task: its result goes back with the change, and the
    projection write follows; the caller's read-your-writes is the API's wait (`projected`)."""
    await h.advance_to("mon", 15, 0)
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    legal = next(t for t in tasks if t.role == "legal")
    await h.decide(handle, legal, "approve")  # returns once Redis shows it
    stored = await ReadModel(h.redis).task(legal.id)
    assert stored is not None and stored.state == "approved"
    events = (await handle.fetch_history()).events
    accepted = next(i for i, e in enumerate(events)
                    if e.HasField("workflow_execution_update_accepted_event_attributes"))
    completed = next(i for i, e in enumerate(events)
                     if e.HasField("workflow_execution_update_completed_event_attributes"))
    between = events[accepted:completed]
    assert not any(e.HasField("workflow_task_started_event_attributes") for e in between)


async def test_an_action_url_carries_incident_text_percent_encoded(h: Harness) -> None:
    """A title with `&`, `?` or `/` stays one query value: it can't add parameters to the
    receiver's URL or change its path."""
    title = "Refunds & more? 100% /admin"
    await h.advance_to("mon", 15, 0)
    url = h.publish.url("/publish") + "?title={{incident.title}}&id={{incident.id}}"
    handle = await h.start(snapshot(viral_playbook(url)), title=title)
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    legal = next(t for t in tasks if t.role == "legal")
    for task in [legal, *[t for t in tasks if t.role == "comms-lead"][:2]]:
        await h.decide(handle, task, "approve")
    [sent] = await eventually(h.received, lambda r: len(r) >= 1)
    path, _, query = sent.path.partition("?")
    assert path == "/publish"
    assert parse_qs(query) == {"title": [title], "id": [handle.id]}
