"""Record histories of the fault paths for the replay test (beside `record.py`'s stories).

    python -m tests.histories.record_faults TAG

- `at-most-once.TAG.json` (time-skipping server): an at-most-once publish answered 500,
  so its outcome is unknown; a communicator asks to send it again; it goes out; resolved.
- `catch-up.TAG.json` (a dev server, real time): a tier and a reminder every 1 s while the
  only worker is stopped for 4 s; each fires once on recovery with `missed`; resolved.

Like `record.py`, it refuses to overwrite a file: a recorded history is a promise.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import uuid
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.config import Settings
from core.payloads import DATA_CONVERTER
from domain.incident import ResolveRequest, ResolveUnknownActionRequest
from tests.factories import snapshot, start_input
from tests.receivers import HttpReceiver
from tests.servers import redis_server
from tests.test_at_most_once import playbook as at_most_once_playbook
from tests.test_catch_up import LIVE_PLAYBOOK
from tests.workflow_harness import fresh_time_env
from worker.main import build_worker
from workflows.incident import IncidentWorkflow

HERE = Path(__file__).parent


async def wait_for(client: Client, workflow_id: str, kind: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    for _ in range(400):
        timeline = await handle.query(IncidentWorkflow.timeline)
        if any(e.kind == kind for e in timeline):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind} entry")


async def resolve(client: Client, workflow_id: str) -> str:
    handle = client.get_workflow_handle(workflow_id)
    await handle.execute_update(IncidentWorkflow.resolve, ResolveRequest(
        request_id=uuid.uuid4().hex, actor="sam-social", summary="Recorded"))
    await handle.result()
    return (await handle.fetch_history()).to_json()


async def at_most_once(redis_url: str) -> str:
    with HttpReceiver(statuses=[500]) as receiver:
        async with (fresh_time_env() as env, httpx.AsyncClient(trust_env=False) as http):
            redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
            async with build_worker(env.client, Settings(redis_url=redis_url), redis, http,
                                    task_queue="record"):
                start = start_input(snapshot(at_most_once_playbook(receiver.url("/post"))),
                                    incident_id="inc-recorded-at-most-once")
                handle = await env.client.start_workflow(
                    IncidentWorkflow.run, start, id=start.incident_id, task_queue="record")
                await wait_for(env.client, handle.id, "action_outcome_unknown")
                receiver.answer(200)
                await handle.execute_update(
                    IncidentWorkflow.resolve_unknown_action, ResolveUnknownActionRequest(
                        request_id=uuid.uuid4().hex, actor="sam-social", step_id="post",
                        outcome="resend", comment="not on the site"))
                await wait_for(env.client, handle.id, "action_run")
                history = await resolve(env.client, handle.id)
            await redis.aclose()
    return history


async def catch_up(redis_url: str) -> str:
    path = shutil.which("temporal")
    assert path, "temporal CLI not on PATH"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=path, data_converter=DATA_CONVERTER,
        dev_server_extra_args=["--log-level", "error"])
    try:
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        async with httpx.AsyncClient(trust_env=False) as http:
            start = start_input(snapshot(LIVE_PLAYBOOK), incident_id="inc-recorded-catch-up")
            async with build_worker(env.client, Settings(redis_url=redis_url), redis, http,
                                    task_queue="record"):
                handle = await env.client.start_workflow(
                    IncidentWorkflow.run, start, id=start.incident_id, task_queue="record")
                await wait_for(env.client, handle.id, "task_created")
            await asyncio.sleep(4)  # the outage
            async with build_worker(env.client, Settings(redis_url=redis_url), redis, http,
                                    task_queue="record"):
                await wait_for(env.client, handle.id, "catch_up")
                await asyncio.sleep(1.5)
                history = await resolve(env.client, handle.id)
        await redis.aclose()
    finally:
        await env.shutdown()
    return history


async def main(tag: str) -> None:
    targets = {"at-most-once": HERE / f"at-most-once.{tag}.json",
               "catch-up": HERE / f"catch-up.{tag}.json"}
    taken = [str(p) for p in targets.values() if p.exists()]
    if taken:
        raise SystemExit(f"refusing to overwrite recorded histories: {', '.join(taken)}")
    with redis_server() as redis_url:
        for name, story in (("at-most-once", at_most_once), ("catch-up", catch_up)):
            history = await story(redis_url)
            targets[name].write_text(history)
            print(f"recorded {targets[name].name}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not re.fullmatch(r"[a-z0-9][a-z0-9.-]{0,40}", sys.argv[1]):
        raise SystemExit("usage: python -m tests.histories.record_faults TAG")
    asyncio.run(main(sys.argv[1]))
