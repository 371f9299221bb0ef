"""Opening incidents and attaching reports, deduplicated by Temporal workflow ids.

Every incident opened with a dedup key gets the workflow id
`domain.ids.dedup_incident_id(key, epoch)`. Each request sends one *update-with-start*:
start that workflow if no run holds the id (`USE_EXISTING` on a running one, so concurrent
callers all land on the same run), then deliver the `report` update. The workflow answers
`created=True` only to the request whose report opened it. Temporal's id uniqueness, not a
Redis lock, is what guarantees one open incident per key.

When the id belongs to a resolved incident, the start is refused (`REJECT_DUPLICATE` ->
`WorkflowAlreadyStartedError`), or the update is refused with `IncidentClosed` while the
resolved run is still finishing, and we try `epoch + 1`. Redis keeps the highest epoch used
per key (`ce:dedup:{sha256}`) so the probe usually starts at the right place; it is only a
hint: after a `FLUSHALL` probing from 0 reaches the same answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
import structlog
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain import errors as codes
from domain.ids import dedup_incident_id
from domain.incident import Incident, Report, ReportResult, StartIncident
from workflows.incident import IncidentWorkflow

log = structlog.get_logger(__name__)

MAX_EPOCHS = 10_000
RACE_RETRIES = 5
# Temporal allows 10 updates in flight per workflow; a burst of reports for one key gets
# RESOURCE_EXHAUSTED (or an aborted update) beyond that. Reports are idempotent by id, so
# the burst is retried with jittered backoff.
BUSY_RETRIES = 12
# Not UNAVAILABLE: that is Temporal down, already retried by the client (`RetryConfig`, a
# few seconds); retrying it again here made a request take 100 s to answer 503.
BUSY_CODES = frozenset({RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.DEADLINE_EXCEEDED})


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0) * (0.5 + random.random()))

# Raise the hint to ARGV[1] unless it is already higher.
_RAISE_HINT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


@dataclass(frozen=True)
class IntakeResult:
    incident: Incident
    created: bool
    report_id: str


def hint_key(dedup_key: str) -> str:
    return f"ce:dedup:{hashlib.sha256(dedup_key.encode()).hexdigest()}"


def new_report_id(person_id: str, idempotency_key: str | None) -> str:
    """A report id; derived from the Idempotency-Key when there is one, so a transport
    retry whose stored response was lost still adds the report only once."""
    if idempotency_key is None:
        return f"rep-{uuid.uuid4().hex}"
    digest = hashlib.sha256(f"{person_id}\n{idempotency_key}".encode()).hexdigest()
    return f"rep-{digest[:32]}"


def _is_closed_rejection(exc: WorkflowUpdateFailedError) -> bool:
    cause = exc.cause
    return isinstance(cause, ApplicationError) and cause.type == codes.INCIDENT_CLOSED


class Intake:
    """Update-with-start against the incident workflow for one dedup key at a time."""

    def __init__(self, client: Client, redis: aioredis.Redis, task_queue: str) -> None:
        self._client = client
        self._redis = redis
        self._task_queue = task_queue
        self._raise_hint = redis.register_script(_RAISE_HINT)

    async def _hint(self, dedup_key: str) -> int:
        try:
            raw = await self._redis.get(hint_key(dedup_key))
        except Exception:  # the hint is an optimisation; Redis trouble must not block intake
            log.warning("dedup_hint_unavailable", exc_info=True)
            return 0
        return int(raw) if raw is not None else 0

    async def submit(self, dedup_key: str, report: Report,
                     build_start: Callable[[str], StartIncident]) -> IntakeResult:
        """Attach `report` to the open incident for `dedup_key`, or open one.

        `build_start(incident_id)` makes the workflow input for the case this call opens it.
        """
        epoch = await self._hint(dedup_key)
        races = busy = 0
        while epoch < MAX_EPOCHS:
            incident_id = dedup_incident_id(dedup_key, epoch)
            start = build_start(incident_id)
            operation = WithStartWorkflowOperation(
                IncidentWorkflow.run, start, id=incident_id,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                task_queue=self._task_queue)
            try:
                # the SDK's stubs type an async update's result as its coroutine: cast
                result = cast(ReportResult, await self._client.execute_update_with_start_workflow(
                    IncidentWorkflow.report, report, start_workflow_operation=operation))
            except WorkflowAlreadyStartedError:
                epoch += 1  # a resolved incident holds this id
                continue
            except WorkflowUpdateFailedError as exc:
                if _is_closed_rejection(exc):
                    epoch += 1  # resolved, its run still finishing
                    continue
                raise
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
            try:
                await self._raise_hint(keys=[hint_key(dedup_key)], args=[epoch])
            except Exception:
                log.warning("dedup_hint_not_saved", exc_info=True)
            return IntakeResult(result.incident, result.created, report.id)
        raise RuntimeError(f"dedup key {dedup_key!r} has more than {MAX_EPOCHS} incidents")
