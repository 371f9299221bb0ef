"""The client side of the time-off overlay: reads and changes go to `TimeOffWorkflow`.

A change is applied by the workflow (update-with-start), then sent to every running
incident of the task queue (signal `time_off`, carrying the whole overlay with its
revision, so a late or repeated signal is harmless). New incidents get the overlay in their
start input (`current()`, cached, refreshed in the background every few seconds). See
`domain.time_off` for the rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from temporalio.client import (
    Client,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from core.current_run import update_current_run
from domain.directory import TimeOff
from domain.incident import IncidentStatus
from domain.time_off import SetAway, SetOverrides, TimeOffRefused, TimeOffStart
from readmodel.reader import ReadModel
from workflows.time_off import time_off_id

log = structlog.get_logger("crisis.time_off")
CACHE_SECONDS = 5.0  # older: answer from the cache, refresh it in the background
MAX_STALE_SECONDS = 10.0  # older (nobody opened an incident for a while): read first
FAN_OUT_CONCURRENCY = 20


class TimeOffStore:
    def __init__(self, client: Client, task_queue: str,
                 read_model: ReadModel | None = None) -> None:
        self.client = client
        self.task_queue = task_queue
        self.read_model = read_model
        self.workflow_id = time_off_id(task_queue)
        self._cached: TimeOff | None = None
        self._cached_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None  # one background read at a time
        self._keeping_fresh: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Keep the overlay fresh in the background (every `CACHE_SECONDS`) while the API
        runs. Incidents are rare, so nearly every one opens after a quiet spell; without this
        each of them waited on a Temporal query for the overlay before it could start."""
        if self._keeping_fresh is None:
            self._keeping_fresh = asyncio.create_task(self._keep_fresh())

    async def stop(self) -> None:
        task, self._keeping_fresh = self._keeping_fresh, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep_fresh(self) -> None:
        while True:
            await self._refresh()  # a failure is logged; the next round tries again
            await asyncio.sleep(CACHE_SECONDS)

    async def read(self) -> TimeOff:
        """The overlay now (empty if nobody set any time off yet)."""
        handle = self.client.get_workflow_handle(self.workflow_id)
        try:
            overlay: TimeOff = await handle.query("time_off", result_type=TimeOff)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            overlay = TimeOff()
        except WorkflowQueryFailedError as exc:
            if "not found" not in str(exc).lower():
                raise
            overlay = TimeOff()
        self._remember(overlay)
        return overlay

    async def current(self) -> TimeOff | None:
        """For a new incident's start input: the overlay, at most `MAX_STALE_SECONDS` old.
        While incidents keep opening, the cache is refreshed in the background once it is
        `CACHE_SECONDS` old, so they never wait on a query (one in a few seconds used to:
        that was the p99 of POST -> first delivery); after a quiet spell, the first one
        reads first. None (no overlay) if Temporal can't answer: never block an incident.
        A change made through this process is in the cache at once (`change`). A started
        store (`start`, as the API does) is kept fresh, so it never reads first."""
        age = time.monotonic() - self._cached_at
        if self._cached is None or age > MAX_STALE_SECONDS:
            await self._refresh()
        elif age > CACHE_SECONDS and self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh())
        return self._cached if self._cached is not None and self._cached.revision else None

    async def _refresh(self) -> None:
        try:
            await self.read()
        except Exception as exc:  # opening the incident matters more
            log.warning("time_off_unreadable", error=str(exc))
        finally:
            self._refreshing = None

    def _remember(self, overlay: TimeOff) -> None:
        if self._cached is None or overlay.revision >= self._cached.revision:
            self._cached, self._cached_at = overlay, time.monotonic()

    async def change(self, req: SetAway | SetOverrides) -> tuple[TimeOff, int]:
        """Apply a change; returns the new overlay and how many running incidents got it."""
        overlay = await self.apply(req)
        return overlay, await self.fan_out(overlay)

    async def apply(self, req: SetAway | SetOverrides) -> TimeOff:
        """Apply a change to the overlay's workflow (the authority incidents read); the
        new overlay. Running incidents are told by `fan_out`."""
        name = "set_away" if isinstance(req, SetAway) else "set_overrides"
        # start (or find) the overlay's workflow, then update it: two calls that every
        # Temporal server answers (the time-skipping test server has no update-with-start)
        handle = await self.client.start_workflow(
            "TimeOff", TimeOffStart(), id=self.workflow_id, task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
        try:
            overlay = await update_current_run(handle, name, req, result_type=TimeOff)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == "Forbidden":
                raise TimeOffRefused(cause.message) from None
            raise
        assert isinstance(overlay, TimeOff)
        self._remember(overlay)
        return overlay

    async def open_incidents(self) -> set[str]:
        """Running incidents: Temporal's visibility (where the server has it) and the read
        model's open incidents (visibility is eventually consistent; the read model is
        written before an incident's first update returns)."""
        ids: set[str] = set()
        query = (f"WorkflowType = 'IncidentWorkflow' AND ExecutionStatus = 'Running' "
                 f"AND TaskQueue = '{self.task_queue}'")
        try:
            ids |= {wf.id async for wf in self.client.list_workflows(query)}
        except RPCError as exc:
            if exc.status != RPCStatusCode.UNIMPLEMENTED:
                log.warning("time_off_visibility_failed", error=str(exc))
        if self.read_model is not None:
            cursor: str | None = None
            while True:
                page, cursor = await self.read_model.list_incidents(
                    status=IncidentStatus.open, cursor=cursor, limit=200)
                ids |= {incident.id for incident in page}
                if cursor is None:
                    break
        return ids

    async def fan_out(self, overlay: TimeOff) -> int:
        """Tell every running incident of this task queue of the overlay (each reads it from
        the overlay's workflow; runs from before take the signal's copy)."""
        ids = sorted(await self.open_incidents())
        gate = asyncio.Semaphore(FAN_OUT_CONCURRENCY)

        async def send(workflow_id: str) -> bool:
            async with gate:
                try:
                    await self.client.get_workflow_handle(workflow_id).signal(
                        "time_off", overlay)
                    return True
                except RPCError as exc:  # finished in between: nothing to tell
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        log.warning("time_off_signal_failed", incident_id=workflow_id,
                                    error=str(exc))
                    return False
        sent: list[Any] = await asyncio.gather(*(send(i) for i in ids))
        log.info("time_off_sent", revision=overlay.revision, incidents=sum(sent))
        return sum(sent)
