"""A step's messages carry the incident's pending projection (`perf-notify-carries-projection`):
`notify_batch` writes it to Redis before it sends, saving a `project` activity and a workflow
task per step. A carried write lands only when its activity runs, so a later batch (a
decision's) can land first: these tests hold the carried write back and check that whatever
lands leaves the read model whole, never a decision without the tasks it decides or a
timeline with holes.

Real servers: the time-skipping Temporal server, the real worker, activities and Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from activities.incident_activities import IncidentActivities
from domain.effects import ProjectionBatch
from domain.incident import StatusUpdateRequest
from readmodel import keys
from tests.factories import snapshot, viral_playbook
from tests.workflow_harness import Harness, eventually
from workflows.incident import IncidentWorkflow


class HeldCarry:
    """Holds back the carried write of the batch that creates the approval tasks."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        original = IncidentActivities._project_first

        async def held(activities: IncidentActivities, projection: ProjectionBatch) -> bool:
            if not self.release.is_set() and any(
                    entry.kind == "task_created" for entry in projection.timeline):
                self.holding.set()
                await self.release.wait()
            return await original(activities, projection)

        monkeypatch.setattr(IncidentActivities, "_project_first", held)


async def messages_to(h: Harness, person_id: str) -> list[str]:
    """What the `log` channel delivered to `person_id` so far."""
    messages: list[str] = await h.redis.lrange(keys.notifications(person_id), 0, -1)
    return messages


@pytest.fixture
async def carry(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[HeldCarry]:
    held = HeldCarry(monkeypatch)
    yield held
    held.release.set()  # before the harness waits for the incident's activities to end


def assert_whole(seqs: list[int]) -> None:
    assert seqs == list(range(1, len(seqs) + 1)), f"timeline in Redis has holes: {seqs}"


async def test_a_decision_landing_before_the_carried_tasks_brings_them_along(
        h: Harness, carry: HeldCarry) -> None:
    handle = await h.start(snapshot(viral_playbook(h.publish.url("/publish"))))
    await asyncio.wait_for(carry.holding.wait(), 15)  # the tasks' messages wait to be sent
    tasks = (await h.state(handle)).tasks
    legal = next(task for task in tasks if task.role == "legal")

    await h.decide(handle, legal, "approve")  # returns once Redis shows the decision

    view = await h.read_model.incident_view(handle.id)
    assert view is not None
    assert {task.id for task in view.tasks} == {task.id for task in tasks}
    assert next(t for t in view.tasks if t.id == legal.id).state == "approved"
    assert_whole([entry.seq for entry in await h.read_model.timeline(handle.id)])
    assert not await messages_to(h, legal.assignee)  # still held back

    carry.release.set()  # the late carried write changes nothing that is newer
    await eventually(lambda: messages_to(h, legal.assignee), bool)
    after = await h.read_model.incident_view(handle.id)
    assert after is not None
    assert next(t for t in after.tasks if t.id == legal.id).state == "approved"
    workflow_timeline = await h.timeline(handle)
    redis_timeline = await eventually(
        lambda: h.read_model.timeline(handle.id),
        lambda entries: len(entries) == len(workflow_timeline))
    assert [e.model_dump() for e in redis_timeline] == \
        [e.model_dump() for e in workflow_timeline]


async def test_a_status_update_waits_for_nothing_the_messages_do(
        h: Harness, carry: HeldCarry) -> None:
    """A command answered while the tasks' messages are held is in Redis at once, with the
    tasks it was issued after: its read-your-writes never waits for a delivery."""
    handle = await h.start(snapshot(viral_playbook(h.publish.url("/publish"))))
    await asyncio.wait_for(carry.holding.wait(), 15)
    request = StatusUpdateRequest(request_id=uuid.uuid4().hex, actor="sam-social",
                                  message="We are on it")
    await handle.execute_update(IncidentWorkflow.post_status_update, request)
    await asyncio.wait_for(h.projected(handle, request.request_id), 10)

    tasks = (await h.state(handle)).tasks
    view = await h.read_model.incident_view(handle.id)
    assert view is not None and {t.id for t in view.tasks} == {t.id for t in tasks}
    timeline = await h.read_model.timeline(handle.id)
    assert [e.kind for e in timeline].count("task_created") == len(tasks)
    assert timeline[-1].kind == "status_update"
    assert_whole([entry.seq for entry in timeline])
