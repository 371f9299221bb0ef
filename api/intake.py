"""Open or attach: the one use case behind `POST /incidents` and `POST /reports`.

`Intake.open_or_attach(command)` picks the playbook (named, or routed by severity), builds the
report, and puts it on the open incident for its dedup key, opening one when none is open.
It answers a per-report receipt: which incident the report is on, and whether it opened it.

Correctness comes from Temporal, not from this process (several API processes may run):
- Every incident opened with a dedup key gets the workflow id
  `domain.ids.dedup_incident_id(key, epoch, secret)`. The report that may open it is sent as
  one *update-with-start*: start that workflow if no run holds the id (`USE_EXISTING` on a
  running one, so concurrent callers of every process land on the same run), then deliver
  the `report` update, which answers `created=True` only to the report that opened it.
  When the id belongs to a resolved incident (`REJECT_DUPLICATE` refuses the start, or the
  update is refused with `IncidentClosed` while the run finishes) we try `epoch + 1`: the
  same key after resolution opens a new incident. Redis keeps the highest epoch used per key
  (`ce:dedup:{keyed digest}`) so the probe usually starts at the right place; it is only a
  hint: after a `FLUSHALL` probing from 0 reaches the same answer.
- Once this process knows the key's open incident, further reports go by the workflow's
  `add_reports` signal, not by updates (Temporal allows 10 updates in flight per workflow
  and 2,000 per run; a storm of update-with-starts on one id stalled it).
- Receipts for signalled reports (`POST /reports`, `IntakeCommand.durable_ack`): once
  Temporal has accepted the signal the report is durable, and the incident's run hands
  reports that reach it after its resolution on to the next incident for the key
  (`domain.forwarding`, the worker's `forward_reports` activity, which uses this same
  router). So the receipt (`IntakeResult.accepted`, HTTP 202) is given as soon as the
  signal is accepted, without waiting for the workflow. Runs from before that change drop
  late signals (`forwards_late_reports` says which), so there, and for `POST /incidents`,
  signals are confirmed: after a batch one `state` query (queries see every event already
  in the history) says whether the incident is still open; if so every report of the
  batch is on it. If it was resolved the `timeline` query says which reports made it, and
  the others go on to the next epoch. A signal refused because the run has completed sends
  its report on the same way.

In this process, reports for one key are *single-flight*: they queue per key and one drainer
works through them in batches (one update-with-start when the open incident is not known,
then one `add_reports` signal per batch, a few batches in flight at once), so 1,000
concurrent duplicates cost one update and a few dozen signals. Correctness never depends on
this process being the only one: every process (and the forwarder) opens through the same
update-with-start on the same deterministic id. Runs without `add_reports` (asked once per
incident with Temporal's built-in `__temporal_workflow_metadata` query) get one signal per
report.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
import structlog
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.config import Settings
from core.time_off_store import TimeOffStore
from core.with_start import settle_start
from domain import errors as codes
from domain.ids import dedup_digest, dedup_incident_id
from domain.incident import Incident, IncidentStatus, Report, ReportResult, StartIncident
from domain.playbook import Severity
from readmodel.reader import ReadModel
from workflows.incident import IncidentWorkflow

from .errors import ApiError
from .idempotency import operation_id
from .playbook_registry import PlaybookRegistry
from .routing import RoutingTable

log = structlog.get_logger(__name__)

T = TypeVar("T")

MAX_EPOCHS = 10_000
RACE_RETRIES = 5
# Transient refusals (the server busy, or briefly unreachable) are retried with jittered
# backoff; reports are idempotent by id, so a repeat is harmless.
BUSY_RETRIES = 12
# Not UNAVAILABLE: that is Temporal down, already retried by the client (`RetryConfig`, a
# few seconds); retrying it again here made a request take 100 s to answer 503.
BUSY_CODES = frozenset({RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.DEADLINE_EXCEEDED})
MAX_BATCH = 500  # reports confirmed by one query
PIPELINE = 4  # batches of signals in flight per key and process
SIGNALS_IN_FLIGHT = 64  # per key and process
KNOWN_KEYS = 10_000  # open incidents remembered per process (LRU)
QUERY_TIMEOUT = timedelta(seconds=10)
# A workflow signal taking a list of reports, used when the incident's workflow has it.
BATCH_SIGNAL = "add_reports"
TITLE_CHARS = 120

# Raise the hint to ARGV[1] unless it is already higher.
_RAISE_HINT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0) * (0.5 + random.random()))


# ---- the use case ------------------------------------------------------------------------

@dataclass(frozen=True)
class IntakeCommand:
    """A report from `actor`, which may open an incident.

    `playbook` None: the routing table picks the playbook (and the incident's severity) from
    `severity`. `title` None: made from the summary. `dedup_key` None: the report opens its
    own incident (keyed by the Idempotency-Key when there is one, so a retry joins it).
    """

    actor: str
    summary: str
    severity: Severity | None
    dedup_key: str | None = None
    source_url: str | None = None
    title: str | None = None
    playbook: str | None = None
    idempotency_key: str | None = None
    durable_ack: bool = False  # a durable acknowledgement is receipt enough (`IntakeResult`)


@dataclass(frozen=True)
class IntakeResult:
    """The receipt: the incident the report is on, and whether this report opened it.

    `accepted`: the report was acknowledged once Temporal accepted its signal to `incident`
    (durable from then on), without waiting for the workflow: it is on that incident's
    timeline, or, if the incident was being resolved at that moment, on the next incident
    for its key (the workflow hands late reports on; `domain.forwarding`)."""

    incident: Incident
    created: bool
    report_id: str
    accepted: bool = False


def title_from(summary: str) -> str:
    first_line = summary.strip().splitlines()[0] if summary.strip() else summary
    short = first_line if len(first_line) <= TITLE_CHARS else first_line[:TITLE_CHARS - 1] + "…"
    return f"Report: {short}"


def dedup_lane(dedup_key: str) -> str:
    return f"key:{dedup_key}"


def lane_key(command: IntakeCommand) -> str:
    """What reports are deduplicated by, namespaced so no client key equals a derived one."""
    if command.dedup_key is not None:
        return dedup_lane(command.dedup_key)
    if command.idempotency_key is not None:  # a retry opens nothing new: it joins
        return f"idem:{operation_id('op', command.actor, command.idempotency_key)}"
    return f"once:{operation_id('op', command.actor, None)}"


# ---- the per-key drainer -----------------------------------------------------------------

@dataclass
class _Pending:
    report: Report
    build_start: Callable[[str], StartIncident]
    keyed: bool  # the report id comes from an Idempotency-Key: a retry may find it placed
    future: asyncio.Future[IntakeResult]
    ack: bool = False  # answered once its signal is accepted, if the incident forwards


@dataclass
class _Lane:
    queue: deque[_Pending] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    attaching: set[asyncio.Task[None]] = field(default_factory=set)


@dataclass(frozen=True)
class _Known:
    incident_id: str
    epoch: int
    incident: Incident  # as it was when this process learned of it (open)


def _remember_flag(cache: OrderedDict[str, bool], key: str, value: bool) -> None:
    cache[key] = value
    while len(cache) > KNOWN_KEYS:
        cache.popitem(last=False)


class ReportRouter:
    """Puts reports on the open incident for their key, opening one when none is open,
    single-flight per key in this process (see the module doc). Used by `Intake` in the
    API, and by the worker's `forward_reports` activity for reports that reached an
    incident after its resolution."""

    def __init__(self, client: Client, redis: aioredis.Redis, settings: Settings) -> None:
        self._client = client
        self._redis = redis
        self._settings = settings
        self._secret = settings.id_secret_bytes()
        self._raise_hint = redis.register_script(_RAISE_HINT)
        self._lanes: dict[str, _Lane] = {}
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._batches: OrderedDict[str, bool] = OrderedDict()  # incident id -> takes batches
        self._forwards: OrderedDict[str, bool] = OrderedDict()  # id -> hands late ones on

    def forget_incident(self, incident_id: str) -> None:
        """`incident_id` was resolved: reports for its key open (or find) the next one.
        Only an optimisation for this process: a report signalled to a resolved incident is
        handed on by the incident itself."""
        for key in [k for k, known in self._known.items() if known.incident_id == incident_id]:
            del self._known[key]

    def forget(self, key: str, incident_id: str) -> None:
        """Stop sending `key`'s reports to `incident_id` (it has been resolved)."""
        known = self._known.get(key)
        if known is not None and known.incident_id == incident_id:
            del self._known[key]


    async def submit(self, key: str, report: Report, build_start: Callable[[str], StartIncident],
                     keyed: bool = False, ack: bool = False) -> IntakeResult:
        """Put `report` on the open incident for `key`, or open one with `build_start(id)`.
        `ack`: answer as soon as Temporal has accepted the report's signal, when the
        incident hands late reports on (`IntakeResult.accepted`)."""
        future: asyncio.Future[IntakeResult] = asyncio.get_running_loop().create_future()
        lane = self._lanes.setdefault(key, _Lane())
        lane.queue.append(_Pending(report, build_start, keyed, future, ack))
        lane.wake.set()
        if lane.task is None:
            lane.task = asyncio.create_task(self._drain(key, lane))
        # a caller that goes away must not cancel the batch its report is in
        return await asyncio.shield(future)

    async def _drain(self, key: str, lane: _Lane) -> None:
        """Work through the key's queue: open the incident when it is not known (one
        update-with-start at a time), and keep up to `PIPELINE` batches of signals going."""
        try:
            while lane.queue or lane.attaching:
                if not lane.queue or len(lane.attaching) >= PIPELINE:
                    lane.wake.clear()
                    woken = asyncio.ensure_future(lane.wake.wait())
                    await asyncio.wait({woken, *lane.attaching},
                                       return_when=asyncio.FIRST_COMPLETED)
                    woken.cancel()
                    continue
                batch = [lane.queue.popleft() for _ in range(min(len(lane.queue), MAX_BATCH))]
                try:
                    known, batch = await self._known_or_open(key, batch)
                except Exception as exc:  # each waiting request gets the error
                    _fail(batch, exc)
                    continue
                if batch:
                    task = asyncio.create_task(self._attach_batch(key, known, batch, lane))
                    lane.attaching.add(task)
                    task.add_done_callback(lane.attaching.discard)
        finally:
            lane.task = None
            # only when the drainer itself was cancelled (shutdown)
            _fail(list(lane.queue), RuntimeError("intake is shutting down"))
            lane.queue.clear()
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _known_or_open(self, key: str, batch: list[_Pending]
                             ) -> tuple[_Known, list[_Pending]]:
        """The key's open incident, opening it with the batch's first report if this process
        does not know it; returns it with the reports still to attach."""
        known = self._known.get(key)
        if known is not None:
            return known, batch
        opener, rest = batch[0], batch[1:]
        accepted: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        opening = asyncio.create_task(self._open(key, opener, accepted if rest else None))
        if rest:
            # Don't hold the rest until the opener's update completes (that waits for the
            # opening projection): once the run has accepted it, it exists and is open.
            either: set[asyncio.Future[Any]] = {opening, accepted}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            early = await self._early_or_none(accepted, opening)
            if early is not None:
                self._remember(key, early)
                opening.add_done_callback(lambda done: self._opened(key, opener, done))
                return early, rest
        try:
            result, known = await opening
        except Exception as exc:
            _fail([opener], exc)
            raise
        self._answer(opener, result)
        if result.incident.status != IncidentStatus.open:
            # a keyed retry found its report on a resolved incident: the rest go round again
            return await self._known_or_open(key, rest) if rest else (known, [])
        self._remember(key, known)
        return known, rest

    async def _early_or_none(self, accepted: asyncio.Future[tuple[str, int]],
                             opening: asyncio.Task[tuple[IntakeResult, _Known]]
                             ) -> _Known | None:
        """`_early_known` once the opener's update is accepted, unless the opener finishes
        first: its answer says all the queries would. Queries reach the run through a worker
        poll, and in a storm one sometimes took a second while the run sat idle (the whole
        storm's first answers waited on it); the opener's own answer takes ~50 ms."""
        if not accepted.done() or opening.done():
            return None
        early = asyncio.create_task(self._early_known(*accepted.result()))
        await asyncio.wait({early, opening}, return_when=asyncio.FIRST_COMPLETED)
        if early.done():
            return early.result()
        early.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await early
        return None

    async def _early_known(self, incident_id: str, epoch: int) -> _Known | None:
        """The incident whose run has just accepted the opener's update, if it takes
        durable acknowledgements (else the rest wait for the opener, as before)."""
        handle = self._client.get_workflow_handle_for(IncidentWorkflow.run, incident_id)
        try:
            forwards, view = await asyncio.gather(
                _retrying(lambda: handle.query(IncidentWorkflow.forwards_late_reports,
                                               rpc_timeout=QUERY_TIMEOUT)),
                _retrying(lambda: handle.query(IncidentWorkflow.state,
                                               rpc_timeout=QUERY_TIMEOUT)))
        except (RPCError, WorkflowQueryFailedError):
            return None
        if not forwards or view.incident.status != IncidentStatus.open:
            return None
        _remember_flag(self._forwards, incident_id, True)
        _remember_flag(self._batches, incident_id, True)
        return _Known(incident_id, epoch, view.incident)

    def _opened(self, key: str, opener: _Pending,
                done: asyncio.Task[tuple[IntakeResult, _Known]]) -> None:
        """The opener's update-with-start, finished after the rest of its batch went on."""
        if done.cancelled():
            _fail([opener], RuntimeError("intake is shutting down"))
            return
        exc = done.exception()
        if exc is not None:
            _fail([opener], exc)
            return
        result, known = done.result()
        self._answer(opener, result)
        if result.incident.status == IncidentStatus.open:
            self._remember(key, known)  # the same run, unless it had to go on to the next

    async def _attach_batch(self, key: str, known: _Known, batch: list[_Pending],
                            lane: _Lane) -> None:
        try:
            retry = await self._attach(known, batch)
        except Exception as exc:  # each waiting request gets the error
            _fail(batch, exc)
            return
        if retry:
            if self._known.get(key) == known:
                self._known.pop(key, None)
            lane.queue.extendleft(reversed(retry))
            lane.wake.set()

    def _remember(self, key: str, known: _Known) -> None:
        if key.startswith("key:"):  # derived keys are used once (and by their retries)
            self._known[key] = known
            self._known.move_to_end(key)
            while len(self._known) > KNOWN_KEYS:
                self._known.popitem(last=False)

    @staticmethod
    def _answer(pending: _Pending, result: IntakeResult) -> None:
        if not pending.future.done():
            pending.future.set_result(result)

    # -- attaching by signal -----------------------------------------------------------

    async def _attach(self, known: _Known, batch: list[_Pending]) -> list[_Pending]:
        handle = self._client.get_workflow_handle_for(IncidentWorkflow.run, known.incident_id)
        durable = any(p.ack for p in batch) and await self._forwards_late(handle)
        delivered = await self._signal(handle, batch)
        sent = [p for p, ok in zip(batch, delivered, strict=True) if ok]
        refused = [p for p, ok in zip(batch, delivered, strict=True) if not ok]
        if durable:
            # Accepted by Temporal, so durable; the incident puts each report on its
            # timeline, or hands it on to the next incident if it is being resolved.
            for pending in [p for p in sent if p.ack]:
                self._answer(pending, IntakeResult(known.incident, False, pending.report.id,
                                                   accepted=True))
            sent = [p for p in sent if not p.ack]
        if not sent:
            return refused
        # Queries see every event already in the history, so this reflects every signal
        # above: if the incident is still open, each of them was added while it was open.
        view = await _retrying(lambda: handle.query(IncidentWorkflow.state,
                                                    rpc_timeout=QUERY_TIMEOUT))
        if view.incident.status == IncidentStatus.open:
            for pending in sent:
                self._answer(pending, IntakeResult(view.incident, False, pending.report.id))
            return refused
        placed = await self._placed_reports(handle)
        for pending in sent:
            if pending.report.id in placed:
                created = placed[pending.report.id]
                self._answer(pending, IntakeResult(view.incident, created, pending.report.id))
            else:
                refused.append(pending)
        log.info("reports_rerouted_after_resolution", incident_id=known.incident_id,
                 reports=len(refused))
        return refused

    async def _signal(self, handle: WorkflowHandle[Any, Any],
                      batch: list[_Pending]) -> list[bool]:
        """Signal the batch's reports: False where the run has completed already.

        One `add_reports` signal for the whole batch when the incident's workflow has that
        handler (asked once per incident through Temporal's built-in metadata query), else
        one `add_report` signal per report."""
        if await self._takes_batches(handle):
            reports = [p.report for p in batch]
            try:
                await _retrying(lambda: handle.signal(BATCH_SIGNAL, reports))
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:  # the run has completed
                    return [False] * len(batch)
                raise
            return [True] * len(batch)
        gate = asyncio.Semaphore(SIGNALS_IN_FLIGHT)

        async def send(pending: _Pending) -> bool:
            async with gate:
                try:
                    await _retrying(lambda: handle.signal(IncidentWorkflow.add_report,
                                                          pending.report))
                except RPCError as exc:
                    if exc.status == RPCStatusCode.NOT_FOUND:  # the run has completed
                        return False
                    raise
                return True

        return list(await asyncio.gather(*(send(p) for p in batch)))

    async def _takes_batches(self, handle: WorkflowHandle[Any, Any]) -> bool:
        known = self._batches.get(handle.id)
        if known is not None:
            return known
        try:
            metadata = await _retrying(lambda: handle.query(
                "__temporal_workflow_metadata", result_type=WorkflowMetadata,
                rpc_timeout=QUERY_TIMEOUT))
        except (RPCError, WorkflowQueryFailedError):
            return False  # e.g. the run has completed: the per-report path says so
        takes = any(d.name == BATCH_SIGNAL for d in metadata.definition.signal_definitions)
        _remember_flag(self._batches, handle.id, takes)
        return takes

    async def _forwards_late(self, handle: WorkflowHandle[Any, Any]) -> bool:
        """Whether the incident's run hands reports signalled after its resolution on to
        the next incident (asked once per incident; runs from before that drop them)."""
        known = self._forwards.get(handle.id)
        if known is None:
            try:
                known = bool(await _retrying(lambda: handle.query(
                    IncidentWorkflow.forwards_late_reports, rpc_timeout=QUERY_TIMEOUT)))
            except (RPCError, WorkflowQueryFailedError):
                return False  # no such query (an older run), or the run has completed
            _remember_flag(self._forwards, handle.id, known)
        return known

    @staticmethod
    async def _placed_reports(handle: WorkflowHandle[Any, Any]) -> dict[str, bool]:
        """The report ids on an incident's timeline -> whether that report opened it."""
        entries = await _retrying(lambda: handle.query(IncidentWorkflow.timeline,
                                                       rpc_timeout=QUERY_TIMEOUT))
        placed: dict[str, bool] = {}
        for entry in entries:
            report_id = entry.details.get("report_id")
            if entry.kind in ("opened", "report_added") and isinstance(report_id, str):
                placed[report_id] = entry.kind == "opened"
        return placed

    # -- opening by update-with-start --------------------------------------------------

    async def _hint(self, key: str) -> int | None:
        try:
            raw = await self._redis.get(self.hint_key(key))
        except Exception:  # the hint is an optimisation; Redis trouble must not block intake
            log.warning("dedup_hint_unavailable", exc_info=True)
            return 0
        return int(raw) if raw is not None else None

    async def _legacy_open(self, key: str, pending: _Pending
                           ) -> tuple[IntakeResult, _Known] | None:
        """An incident opened before ids were keyed with the secret, still open: its id was
        `inc-{sha256(dedup_key)[:20]}-{epoch}`, its epoch hint `ce:dedup:{sha256(dedup_key)}`.
        Reports for its key keep going to it until it is resolved (then the keyed ids take
        over), so an upgrade does not open a second incident for an open key."""
        if not key.startswith("key:"):
            return None
        digest = hashlib.sha256(key.removeprefix("key:").encode()).hexdigest()
        try:
            raw = await self._redis.get(f"ce:dedup:{digest}")
        except Exception:
            log.warning("dedup_hint_unavailable", exc_info=True)
            return None
        if raw is None:
            return None
        incident_id = f"inc-{digest[:20]}-{int(raw)}"
        handle = self._client.get_workflow_handle_for(IncidentWorkflow.run, incident_id)
        try:
            result = cast(ReportResult, await handle.execute_update(
                IncidentWorkflow.report, pending.report))
        except WorkflowUpdateFailedError as exc:
            if _is_closed_rejection(exc):
                return None  # resolved: the keyed ids take over
            raise
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None  # completed, or never existed
            raise
        return (IntakeResult(result.incident, result.created, pending.report.id),
                _Known(incident_id, -1, result.incident))

    def hint_key(self, key: str) -> str:
        return f"ce:dedup:{dedup_digest(key, self._secret)}"

    async def _open(self, key: str, pending: _Pending,
                    accepted: asyncio.Future[tuple[str, int]] | None = None
                    ) -> tuple[IntakeResult, _Known]:
        """Attach `pending` to the open incident for `key` or open one, by update-with-start.
        `accepted` is given (incident id, epoch) as soon as a run has accepted the update."""
        report = pending.report
        hinted = await self._hint(key)
        if hinted is None:  # no incident yet with a keyed id for this key
            legacy = await self._legacy_open(key, pending)
            if legacy is not None:
                return legacy
        epoch = hinted or 0
        races = busy = 0
        while epoch < MAX_EPOCHS:
            incident_id = dedup_incident_id(key, epoch, self._secret)
            operation = WithStartWorkflowOperation(
                IncidentWorkflow.run, pending.build_start(incident_id), id=incident_id,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                task_queue=self._settings.task_queue)
            try:
                update = await self._client.start_update_with_start_workflow(
                    IncidentWorkflow.report, report, start_workflow_operation=operation,
                    wait_for_stage=WorkflowUpdateStage.ACCEPTED)
                if accepted is not None and not accepted.done():
                    accepted.set_result((incident_id, epoch))
                # the SDK's stubs type an async update's result as its coroutine: cast
                result = cast(ReportResult, await update.result())
            except (WorkflowAlreadyStartedError, WorkflowUpdateFailedError) as exc:
                await settle_start(operation)
                if isinstance(exc, WorkflowUpdateFailedError) and not _is_closed_rejection(exc):
                    raise
                # a resolved incident holds this id (its run may still be finishing)
                found = await self._find_on_resolved(incident_id, pending)
                if found is not None:
                    return found, _Known(incident_id, epoch, found.incident)
                epoch += 1
                continue
            except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
                # an aborted update (a burst) is retried like RESOURCE_EXHAUSTED
                status = (exc.status if isinstance(exc, RPCError)
                          else RPCStatusCode.DEADLINE_EXCEEDED)
                if status in BUSY_CODES and busy < BUSY_RETRIES:
                    await _backoff(busy)
                    busy += 1
                    continue
                if not isinstance(exc, RPCError):
                    raise
                # the run closed between the server's id check and the update: look again
                if exc.status != RPCStatusCode.NOT_FOUND or races >= RACE_RETRIES:
                    raise
                races += 1
                await asyncio.sleep(0.05 * races)
                continue
            if result.forwards_late_reports:  # so it has `add_reports` too: no queries
                _remember_flag(self._forwards, incident_id, True)
                _remember_flag(self._batches, incident_id, True)
            if not key.startswith("once:"):  # a one-off key is never looked up again
                try:
                    await self._raise_hint(keys=[self.hint_key(key)], args=[epoch])
                except Exception:
                    log.warning("dedup_hint_not_saved", exc_info=True)
            return IntakeResult(result.incident, result.created, report.id), \
                _Known(incident_id, epoch, result.incident)
        raise RuntimeError(f"dedup key {key!r} has more than {MAX_EPOCHS} incidents")

    async def _find_on_resolved(self, incident_id: str, pending: _Pending) -> IntakeResult | None:
        """A retry (same Idempotency-Key) of a report its first attempt put on an incident
        that has been resolved since: the receipt of that, not a new incident."""
        if not pending.keyed:
            return None
        handle = self._client.get_workflow_handle_for(IncidentWorkflow.run, incident_id)
        placed = await self._placed_reports(handle)
        if pending.report.id not in placed:
            return None
        view = await _retrying(lambda: handle.query(IncidentWorkflow.state,
                                                    rpc_timeout=QUERY_TIMEOUT))
        return IntakeResult(view.incident, placed[pending.report.id], pending.report.id)



class Intake(ReportRouter):
    """Open or attach: the `POST /incidents` and `POST /reports` use case."""

    def __init__(self, client: Client, redis: aioredis.Redis, settings: Settings,
                 registry: PlaybookRegistry, routing: RoutingTable) -> None:
        super().__init__(client, redis, settings)
        self._registry = registry
        self._routing = routing
        self.time_off = TimeOffStore(client, settings.task_queue, ReadModel(redis))

    # -- the command -------------------------------------------------------------------

    async def open_or_attach(self, command: IntakeCommand) -> IntakeResult:
        if command.playbook is None:
            route = self._routing.route(command.severity)
            if route is None:
                raise ApiError(422, f"no playbook is routed for severity {command.severity}",
                               "NoRoute")
            playbook_id, severity = route
            unknown = f"the routing table names unknown playbook {playbook_id!r}"
        else:
            assert command.severity is not None, "an incident opened by name has a severity"
            playbook_id, severity = command.playbook, command.severity
            unknown = f"unknown playbook {playbook_id!r}"
        snapshot = self._registry.get(playbook_id)
        if snapshot is None:
            raise ApiError(422, unknown, "UnknownPlaybook")
        if severity not in snapshot.definition.severities:
            allowed = ", ".join(s.value for s in snapshot.definition.severities)
            raise ApiError(422, f"playbook {snapshot.id!r} handles severities {allowed}, not "
                                f"{severity.value}", "SeverityNotSupported")
        directory = self._registry.incident_directory(snapshot)
        time_off = await self.time_off.current()
        report = Report(id=operation_id("rep", command.actor, command.idempotency_key, 32),
                        summary=command.summary, source_url=command.source_url,
                        severity=command.severity, reported_by=command.actor)
        title = command.title if command.title is not None else title_from(command.summary)
        settings = self._settings

        def build_start(incident_id: str) -> StartIncident:
            return StartIncident(
                incident_id=incident_id, title=title, summary=command.summary,
                severity=severity, source_url=command.source_url, dedup_key=command.dedup_key,
                opened_by=command.actor, opening_report_id=report.id, playbook=snapshot,
                directory=directory, public_url=settings.public_url,
                continue_as_new_after_events=settings.continue_as_new_after_events,
                time_off=time_off)

        return await self.submit(lane_key(command), report, build_start,
                                 keyed=command.idempotency_key is not None,
                                 ack=command.durable_ack)


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)


def _is_closed_rejection(exc: WorkflowUpdateFailedError) -> bool:
    cause = exc.cause
    return isinstance(cause, ApplicationError) and cause.type == codes.INCIDENT_CLOSED


# A call that ran into its `rpc_timeout` fails with CANCELLED ("Timeout expired"): a query
# waits while the workflow cannot take a task (e.g. continuing as new in a storm).
RETRIED_CODES = BUSY_CODES | {RPCStatusCode.CANCELLED}


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """`call()` (a signal or a query: idempotent), retried with backoff while Temporal is
    busy, briefly unreachable, or the workflow slow to answer."""
    attempt = 0
    while True:
        try:
            return await call()
        except RPCError as exc:
            if exc.status not in RETRIED_CODES or attempt >= BUSY_RETRIES:
                raise
        await _backoff(attempt)
        attempt += 1
