"""Issue 11 item 3: the projection catches up by itself after a Redis outage.

Real servers: a Temporal dev server, the real worker and activities, and a Redis that the
test keeps down for 90 s from the incident's start (so during its first notification),
then starts again on the same port. The message is delivered once after Redis returns, and
a status update accepted by the workflow during the outage is in the read model (the
timeline Redis serves) within 5 s of Redis coming back, with no rebuild.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from temporalio.testing import WorkflowEnvironment

from core.config import Settings
from domain.incident import ResolveRequest, StatusUpdateRequest
from readmodel import keys
from tests.factories import snapshot, start_input
from tests.servers import free_port, redis_server
from worker.main import build_worker
from workflows.incident import IncidentWorkflow

OUTAGE_SECONDS = 90.0
CATCH_UP_SECONDS = 5.0

PLAYBOOK = {
    "id": "outage", "name": "Tell social", "version": 1,
    "defaults": {"channels": ["log"], "respect_working_hours": False},
    "steps": [
        {"id": "tell-social", "notify": {"to": [{"person": "sam-social"}],
                                         "message": "{{ incident.title }} is spreading"}},
        {"id": "done", "resolution": {}},
    ],
}


async def _timeline_kinds(redis: aioredis.Redis, incident_id: str) -> list[str]:
    entries = await redis.zrange(keys.incident_timeline(incident_id), 0, -1)
    return [json.loads(entry)["kind"] for entry in entries]


async def test_redis_down_90s_during_first_notification_catches_up_by_itself(
        dev_env: WorkflowEnvironment) -> None:
    port = free_port()
    redis = aioredis.Redis(port=port, decode_responses=True, socket_connect_timeout=0.5,
                           retry=Retry(NoBackoff(), 0))
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0",
                        task_queue=f"outage-{uuid.uuid4().hex[:8]}")
    start = start_input(snapshot(PLAYBOOK))
    async with httpx.AsyncClient(trust_env=False) as http, \
            build_worker(dev_env.client, settings, redis, http):
        outage_started = time.monotonic()
        handle = await dev_env.client.start_workflow(
            IncidentWorkflow.run, start, id=start.incident_id, task_queue=settings.task_queue)
        await asyncio.sleep(20)  # the opening projection and the first delivery have failed
        entry = await asyncio.wait_for(handle.execute_update(
            IncidentWorkflow.post_status_update, StatusUpdateRequest(
                request_id=uuid.uuid4().hex, actor="sam-social",
                message="Looking into it")), OUTAGE_SECONDS - 25)
        assert entry.kind == "status_update"  # accepted while Redis is still down
        await asyncio.sleep(OUTAGE_SECONDS - (time.monotonic() - outage_started))
        kinds = [e.kind for e in await handle.query(IncidentWorkflow.timeline)]
        assert "notification_delayed" in kinds and "notified" not in kinds

        with redis_server(port):
            back = time.monotonic()
            while "status_update" not in await _timeline_kinds(redis, start.incident_id):
                assert time.monotonic() - back < CATCH_UP_SECONDS, \
                    "the status update did not reach the read model in time"
                await asyncio.sleep(0.1)
            caught_up = time.monotonic() - back
            assert caught_up < CATCH_UP_SECONDS
            assert await redis.exists(keys.incident(start.incident_id))

            # the delayed notification goes out once Redis is back, exactly once
            deadline = time.monotonic() + 180
            while not await redis.lrange(keys.notifications("sam-social"), 0, -1):
                assert time.monotonic() < deadline, "the delayed message was never delivered"
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)
            assert len(await redis.lrange(keys.notifications("sam-social"), 0, -1)) == 1
            kinds = [e.kind for e in await handle.query(IncidentWorkflow.timeline)]
            assert kinds.count("notified") == 1

            final = await asyncio.wait_for(handle.execute_update(
                IncidentWorkflow.resolve, ResolveRequest(
                    request_id=uuid.uuid4().hex, actor="sam-social", summary="Over")), 30)
            assert final.status == "resolved"
            await asyncio.wait_for(handle.result(), 30)
            stored = json.loads(await redis.get(keys.incident(start.incident_id)) or "{}")
            assert stored["status"] == "resolved"
            assert (await _timeline_kinds(redis, start.incident_id)).count("notified") == 1
    await redis.aclose()
