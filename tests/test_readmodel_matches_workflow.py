"""The read model tells the truth: what `GET /incidents/{id}` (and its tasks and timeline)
answers equals what the workflow's own `state` and `timeline` queries return, after every
step of every shipped playbook, including after escalation tiers have fired.

The whole API runs in-process against a time-skipping Temporal server, a real worker and a
real Redis, on the demo directory and the shipped playbooks, so virtual time can pass the
15- and 30-minute tiers and the reminders. This is the test that catches a state change the
aggregate made but the projection never heard of (once: `tiers_fired` stuck at [0, 0]).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from domain.incident import IncidentFinal, IncidentView, TimelineEntry
from tests.api_fixtures import ApiStack, _run_stack, with_db
from tests.clock import EVEN_WEEK
from tests.workflow_harness import advance_to_today, fresh_time_env
from workflows.incident import IncidentWorkflow

ROOT = Path(__file__).resolve().parent.parent
STORIES = {"viral-complaint": "high", "data-breach-rumour": "critical",
           "product-safety": "high"}
COMMUNICATOR = "cara-comms"
ADMIN = "ada-admin"


@pytest.fixture
async def stack(redis_url: str, tmp_path: Path) -> AsyncIterator[ApiStack]:
    async with fresh_time_env() as env:
        await advance_to_today(env, EVEN_WEEK)
        # Friday 17:40 in New York: the viral-complaint story of the brief
        now = (await env.get_current_time()).astimezone(ZoneInfo("America/New_York"))
        friday = (now + timedelta(days=(4 - now.weekday()) % 7 or 7)).replace(
            hour=17, minute=40, second=0, microsecond=0)
        await env.sleep(friday - now)
        async for running in _run_stack(env, with_db(redis_url, 5), tmp_path,
                                        ROOT / "config" / "directory.yaml", ROOT / "playbooks"):
            await running.redis.flushdb()
            yield running


def _by_id(items: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {item[key]: item for item in items}


async def _differences(stack: ApiStack, handle: WorkflowHandle[Any, Any]
                       ) -> tuple[IncidentView, list[str]]:
    description = await handle.describe()
    if description.status == WorkflowExecutionStatus.RUNNING:
        view: IncidentView = await handle.query(IncidentWorkflow.state)
        timeline: list[TimelineEntry] = await handle.query(IncidentWorkflow.timeline)
    else:
        # A query on a closed workflow replays it, and the time-skipping server's stored
        # event times differ by a few ms from the ones the live run saw; the result is what
        # the live run computed.
        final = IncidentFinal.model_validate(await handle.result())
        view, timeline = final.view, final.timeline
    truth = view.model_dump(mode="json")
    incident_id = view.incident.id
    found: list[str] = []

    detail = await stack.call("GET", f"/incidents/{incident_id}", ADMIN)
    assert detail.status_code == 200, detail.text
    read = detail.json()
    if read["incident"] != truth["incident"]:
        found.append(f"incident: {read['incident']} != {truth['incident']}")
    if _by_id(read["nodes"], "step_id") != _by_id(truth["nodes"], "step_id"):
        found.append(f"nodes: {read['nodes']} != {truth['nodes']}")
    if _by_id(read["tasks"], "id") != _by_id(truth["tasks"], "id"):
        found.append("tasks differ")
    if sorted(t["id"] for t in read["open_tasks"]) != sorted(
            t["id"] for t in truth["tasks"] if t["state"] == "open"):
        found.append("open tasks differ")

    listed = await stack.call("GET", f"/tasks?incident_id={incident_id}&limit=200", ADMIN)
    assert listed.status_code == 200, listed.text
    if _by_id(listed.json()["items"], "id") != _by_id(truth["tasks"], "id"):
        found.append("task list differs")
    for task in truth["tasks"]:
        if task["state"] == "open":  # each holder's inbox shows it
            inbox = await stack.call("GET", "/tasks?state=open&limit=200", task["assignee"])
            if task["id"] not in [t["id"] for t in inbox.json()["items"]]:
                found.append(f"{task['id']} missing from {task['assignee']}'s inbox")

    entries = (await stack.call("GET", f"/incidents/{incident_id}/timeline", ADMIN)).json()
    expected = [e.model_dump(mode="json") for e in timeline]
    if entries["entries"] != expected:
        wrong = [(a, b) for a, b in zip(entries["entries"], expected, strict=False) if a != b]
        found.append(f"timeline: {len(entries['entries'])} entries read, {len(expected)} in "
                     f"the workflow; first difference: {wrong[:1]}")
    return view, found


async def assert_read_model_matches(stack: ApiStack, handle: WorkflowHandle[Any, Any],
                                    step: str) -> IncidentView:
    """The read model is written after the workflow commits, so it may lag by a moment:
    wait (real time, bounded) for it to agree, then require every field to be equal."""
    for _ in range(100):
        view, found = await _differences(stack, handle)
        if not found:
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"after {step}, the read model still differs: {found}")


@pytest.mark.parametrize("playbook", list(STORIES))
async def test_read_model_equals_workflow_after_every_step(stack: ApiStack,
                                                           playbook: str) -> None:
    opened = await stack.call("POST", "/incidents", COMMUNICATOR, json={
        "title": f"Read model check: {playbook}", "summary": "A post is spreading",
        "severity": STORIES[playbook], "playbook": playbook,
        "source_url": "https://social.example/post/1"})
    assert opened.status_code == 201, opened.text
    handle = stack.env.client.get_workflow_handle_for(IncidentWorkflow.run, opened.json()["id"])
    view = await assert_read_model_matches(stack, handle, "opened")

    # let two escalation tiers fire (15 and 30 minutes), checking after each
    fired: list[list[int]] = []
    for minutes in (16, 15):
        await stack.env.sleep(timedelta(minutes=minutes))
        view = await assert_read_model_matches(stack, handle, f"+{minutes} min")
        fired += [n.tiers_fired for n in view.nodes]
    if any(n.tiers_fired for n in view.nodes):
        assert any(sum(f) > 0 for f in fired), "no tier fired in 31 minutes"

    # decide every open task, one at a time, until no node is pending
    for round_ in range(30):
        open_tasks = [t for t in view.tasks if t.state == "open"]
        if not open_tasks:
            break
        task = open_tasks[0]
        decided = await stack.call("POST", f"/tasks/{task.id}/decision", task.assignee,
                                   json={"decision": "approve", "comment": f"round {round_}"})
        assert decided.status_code == 200, decided.text
        view = await assert_read_model_matches(stack, handle, f"decision {round_}")

    status = await stack.call("POST", f"/incidents/{view.incident.id}/status-updates",
                              COMMUNICATOR, json={"message": "Statement is out"})
    assert status.status_code == 201, status.text
    await assert_read_model_matches(stack, handle, "status update")
    await stack.env.sleep(timedelta(hours=2, minutes=1))  # a reminder fires
    await assert_read_model_matches(stack, handle, "reminder")
    resolved = await stack.call("POST", f"/incidents/{view.incident.id}/resolve", COMMUNICATOR,
                                json={"summary": "Handled"}, headers={
                                    "Idempotency-Key": uuid.uuid4().hex})
    assert resolved.status_code == 200, resolved.text
    final = await assert_read_model_matches(stack, handle, "resolved")
    assert final.incident.status == "resolved"
    assert all(n.outcome != "pending" for n in final.nodes)
    assert isinstance(final.incident.opened_at, datetime)
