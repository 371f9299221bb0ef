"""Quorum that widens before it fails, and tiers that reach the person they name.

Friday 17:40 London in the test directory: comms leads cara and chloe (London) and colin
(New York) are in hours; chen (Singapore) is not, and otto stands in for him on call.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from domain.incident import DecideRequest, Task
from tests.factories import snapshot, viral_playbook
from tests.workflow_harness import Harness, eventually
from workflows.incident import IncidentWorkflow


async def decide(handle: Any, task: Task, decision: str, comment: str = "no") -> Any:
    return await handle.execute_update(IncidentWorkflow.decide, DecideRequest(
        request_id=uuid.uuid4().hex, actor=task.assignee, task_id=task.id,
        decision=decision, comment=comment))  # type: ignore[arg-type]


async def test_comms_rejects_widen_to_off_hours_members_instead_of_ending(h: Harness) -> None:
    await h.advance_to("fri", 17, 40, "Europe/London")
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    comms = [t for t in tasks if t.role == "comms-lead"]
    assert "chen-comms" not in {t.assignee for t in comms}  # off hours, replaced by on-call
    # three of the four comms voters reject: 2 of comms is impossible among them
    for task in comms[:3]:
        result = await decide(handle, task, "reject")
    assert result.node.outcome == "pending"
    view = await h.state(handle)
    widened = [t for t in view.tasks if t.assignee == "chen-comms"]
    assert len(widened) == 1 and widened[0].state == "open"
    created = next(e for e in await h.timeline(handle) if e.kind == "task_created"
                   and e.details["assignee"] == "chen-comms")
    assert "widened" in created.details["reason"]
    # the widened member is reached like everyone else
    await eventually(lambda: h.timeline(handle), lambda tl: any(
        e.kind == "notified" and e.details.get("to") == "chen-comms"
        and e.details.get("purpose") == "task" for e in tl))


async def test_a_legal_veto_still_ends_the_node_at_once(h: Harness) -> None:
    await h.advance_to("fri", 17, 40, "Europe/London")
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    legal = next(t for t in tasks if t.role == "legal")
    result = await decide(handle, legal, "reject")
    assert result.node.outcome == "vetoed"
    assert not [t for t in (await h.state(handle)).tasks if t.state == "open"]


async def test_a_tier_naming_a_person_gives_them_a_task_even_with_a_stand_in(
        h: Harness) -> None:
    """Saturday 02:00: olga (on call) stands in for the off-hours legal people. A tier that
    says "General Counsel may approve" still gives gabe-counsel a task of his own."""
    data = viral_playbook(h.publish.url())
    data["steps"][2]["approval"]["escalation"][0]["add_approvers"] = [
        {"person": "gabe-counsel"}]  # tier 2 at 15 min: "General Counsel may approve"
    await h.advance_to("sat", 2, 0, "Europe/London")
    handle = await h.start(snapshot(data))
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 3)
    assert "gabe-counsel" not in {t.assignee for t in tasks}
    assert "olga-oncall" in {t.assignee for t in tasks}
    await h.advance(timedelta(minutes=16))
    view = await h.tasks_when(handle, lambda ts: any(t.assignee == "gabe-counsel" for t in ts))
    gabe = [t for t in view if t.assignee == "gabe-counsel"]
    assert len(gabe) == 1 and gabe[0].state == "open" and gabe[0].role == "legal"
    # never one person twice
    open_holders = [t.assignee for t in view if t.state == "open"]
    assert len(open_holders) == len(set(open_holders))
