"""Catch-up fires once: after an outage, an overdue repeating escalation tier or reminder
fires ONCE, with a note of how many firings it stands for ("missed": n on the timeline and
in the message), and then keeps its schedule: the next firing is the next slot on its
original grid (start + k * every), not "recovery + every".

- The aggregate, with pinned times: a tier repeating every 30 s after a 10-minute outage
  fires once (missed 19), then at the next grid slot; a reminder likewise.
- The workflow on a real Temporal dev server: the only worker stops, timers fall due with
  nobody to run them, a new worker starts; one firing each, no burst. (The time-skipping
  server can't stand in here: it stops its clock while a workflow task is waiting for a
  worker, so "ten minutes without a worker" never passes there. The dev server runs in
  real time, so this variant is scaled down: every 1 s, an outage of 8 s or more.)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis.asyncio as aioredis
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from core.config import Settings
from domain.incident import TimelineEntry
from readmodel import keys
from tests.factories import snapshot, start_input, viral_playbook
from tests.test_ledger import PUBLISH, WED_NOON, approval_of, new_ledger, opened
from tests.workflow_harness import eventually
from worker.main import build_worker
from workflows.incident import IncidentWorkflow

STEP = "holding-statement"
EVERY = timedelta(seconds=30)
OUTAGE = timedelta(minutes=10)


def tier_every_30s(data: dict[str, Any]) -> dict[str, Any]:
    data["steps"][2]["approval"]["escalation"] = [
        {"name": "nudge", "after": "30s", "repeat": 20, "every": "30s",
         "notify": [{"person": "vera-vp"}]}]
    return data


def test_a_tier_overdue_after_a_ten_minute_outage_fires_once_then_keeps_its_grid() -> None:
    ledger, _ = opened(tier_every_30s(viral_playbook(PUBLISH)))
    approval = approval_of(ledger)
    assert ledger.next_tier(STEP, approval) == (0, WED_NOON + EVERY)
    back = WED_NOON + OUTAGE + timedelta(seconds=4)  # slots at 30 s ... 600 s are due
    slots = ledger.tier_slots_due(STEP, approval, 0, back)
    assert slots == 20
    firing, _, _ = ledger.fire_tier(STEP, approval, 0, back, title="t", content="c",
                                    slots=slots)
    escalations = [e for e in ledger.state.timeline if e.kind == "escalation"]
    assert len(escalations) == 1
    assert (firing, escalations[0].details["missed"]) == (20, 19)
    # the next slot of the original grid (630 s), not recovery + 30 s (634 s)
    assert ledger.next_tier(STEP, approval) == (0, WED_NOON + EVERY + OUTAGE)
    on_time = WED_NOON + EVERY + OUTAGE
    assert ledger.tier_slots_due(STEP, approval, 0, on_time) == 1
    ledger.fire_tier(STEP, approval, 0, on_time, title="t", content="c")
    assert "missed" not in ledger.state.timeline[-1].details
    assert ledger.next_tier(STEP, approval) == (None, None)  # 21 slots: all used


def test_an_outage_longer_than_all_repeats_fires_the_tier_once_and_ends_it() -> None:
    ledger, _ = opened(tier_every_30s(viral_playbook(PUBLISH)))
    approval = approval_of(ledger)
    back = WED_NOON + timedelta(hours=1)
    assert ledger.tier_slots_due(STEP, approval, 0, back) == 21  # 1 + 20 repeats
    ledger.fire_tier(STEP, approval, 0, back, title="t", content="c", slots=21)
    assert ledger.state.timeline[-1].details["missed"] == 20
    assert ledger.next_tier(STEP, approval) == (None, None)


def test_a_reminder_overdue_after_an_outage_fires_once_then_keeps_its_grid() -> None:
    ledger = new_ledger()  # the viral playbook: a status reminder every 2 h
    step = "status-reminder"
    every = timedelta(hours=2)
    ledger.progress(step, WED_NOON)
    back = WED_NOON + timedelta(hours=10, minutes=5)  # 5 slots due: 2 h, 4 h ... 10 h
    due, missed = ledger.reminder_slot(step, back)
    assert (due, missed) == (WED_NOON + 5 * every, 4)
    assert ledger.fire_reminder(step, due, missed, at=back) == 5
    entry = ledger.state.timeline[-1]
    assert (entry.kind, entry.at, entry.details["missed"], entry.details["firing"]) == (
        "catch_up", back, 4, 5)
    # next: the 12 h slot of the grid; asked early it says "not yet, at 12 h"
    assert ledger.reminder_slot(step, back) == (WED_NOON + 6 * every, 0)
    on_time = WED_NOON + 6 * every + timedelta(milliseconds=20)
    assert ledger.reminder_slot(step, on_time) == (WED_NOON + 6 * every, 0)
    before = len(ledger.state.timeline)
    assert ledger.fire_reminder(step, WED_NOON + 6 * every, 0, at=on_time) == 6
    assert len(ledger.state.timeline) == before  # on time: no catch-up entry


# ---- the workflow on a real dev server ------------------------------------------------

RT_EVERY = 1  # seconds
RT_OUTAGE = 8.0  # seconds
LIVE_PLAYBOOK: dict[str, Any] = {
    "id": "catch-up", "name": "Catch-up", "version": 1,
    "defaults": {"channels": ["log"], "respect_working_hours": False},
    "steps": [
        {"id": "nag", "reminder": {"every": f"{RT_EVERY}s", "to": [{"person": "sam-social"}],
                                   "message": "Post a status update"}},
        {"id": "sign-off", "approval": {
            "title": "Sign off", "content": "We are looking into it.",
            "approvers": [{"person": "lena-legal"}], "quorum": "any", "deadline": "4h",
            "escalation": [{"name": "nudge", "after": "2s", "repeat": 20,
                            "every": f"{RT_EVERY}s", "notify": [{"person": "vera-vp"}]}]}},
        {"id": "done", "resolution": {}},
    ],
}


@asynccontextmanager
async def a_worker(env: WorkflowEnvironment, redis_url: str, queue: str
                   ) -> AsyncIterator[None]:
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with (httpx.AsyncClient(timeout=5.0, trust_env=False) as http,
                    build_worker(env.client, Settings(redis_url=redis_url), redis, http,
                                 task_queue=queue)):
            yield
    finally:
        await redis.aclose()


async def timeline(handle: WorkflowHandle[Any, Any]) -> list[TimelineEntry]:
    entries: list[TimelineEntry] = await handle.query(IncidentWorkflow.timeline)
    return entries


def of(entries: list[TimelineEntry], kind: str, since: datetime | None = None,
       **details: Any) -> list[TimelineEntry]:
    return [e for e in entries if e.kind == kind and (since is None or e.at >= since)
            and all(e.details.get(k) == v for k, v in details.items())]


def gaps(entries: list[TimelineEntry]) -> list[float]:
    return [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(entries)]


async def test_after_a_worker_outage_a_tier_and_a_reminder_fire_once_not_in_a_burst(
        dev_env: WorkflowEnvironment, redis_url: str) -> None:
    queue = f"catch-up-{uuid.uuid4().hex[:8]}"
    async with a_worker(dev_env, redis_url, queue):
        start = start_input(snapshot(LIVE_PLAYBOOK))
        handle = await dev_env.client.start_workflow(
            IncidentWorkflow.run, start, id=start.incident_id, task_queue=queue)
        await eventually(lambda: timeline(handle),
                         lambda tl: bool(of(tl, "notified", purpose="task")))
    await asyncio.sleep(RT_OUTAGE)  # the outage: no worker at all
    recovered = datetime.now(UTC)
    try:
        async with a_worker(dev_env, redis_url, queue):
            first = await eventually(
                lambda: timeline(handle),
                lambda tl: bool(of(tl, "escalation", since=recovered)), within=30)
            back = of(first, "escalation", since=recovered)[0].at
            await asyncio.sleep(3 * RT_EVERY + 0.5)  # three more slots on the grid
            entries = await timeline(handle)
    finally:
        await handle.terminate("test finished")

    escalations = of(entries, "escalation", since=recovered)
    catch_up = escalations[0]
    assert catch_up.details["missed"] >= RT_OUTAGE / RT_EVERY - 2, catch_up.details
    assert catch_up.details["firing"] - catch_up.details["missed"] <= 2  # 0-1 fired before
    # no burst: one firing stood for the missed ones, then one per second on the grid
    assert len(of(entries, "escalation", since=back)) <= 5
    assert all(gap >= 0.5 for gap in gaps(escalations)), gaps(escalations)
    assert [e.details.get("missed") for e in escalations[1:]] == [None] * (
        len(escalations) - 1)
    reminder_catch_up = of(entries, "catch_up", since=recovered, step="nag")
    assert len(reminder_catch_up) == 1
    assert reminder_catch_up[0].details["missed"] >= RT_OUTAGE / RT_EVERY - 2
    reminders = of(entries, "reminder", since=recovered)
    assert 1 <= len(reminders) <= 5
    assert all(gap >= 0.5 for gap in gaps(reminders)), gaps(reminders)
    notes = [m for m in await sent_messages(redis_url, start.incident_id)
             if "Catching up:" in m]
    assert len(notes) == 2, notes  # the escalation's message and the reminder's say so


async def sent_messages(redis_url: str, incident_id: str) -> list[str]:
    """The messages the `log` channel delivered for this incident (the notification feeds
    of the tier's and the reminder's recipients)."""
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        out: list[str] = []
        for person in ("vera-vp", "sam-social"):
            for raw in await redis.lrange(keys.notifications(person), 0, -1):
                entry = json.loads(raw)
                if entry["incident_id"] == incident_id:
                    out.append(entry["message"])
        return out
    finally:
        await redis.aclose()
