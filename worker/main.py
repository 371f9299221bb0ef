"""The worker process: runs `IncidentWorkflow` and the activities on one task queue.

Clients are created here and injected into the activities.

Workflows run unsandboxed in the worker (`workflow_runner()`). The SDK's sandbox re-imports
a workflow's module for every instance it caches or replays (~120 KB of code objects per
open incident for `workflows/incident.py`), and re-enters itself (an `exec`) on every
activation and for every payload's serialization context. Measured with `make bench` on 2
cores (rows "time-skipping: incidents/s", "decide ... on an evicted incident"): about half
as much again throughput, and an evicted decide about twice as fast. What the sandbox
guarded against is kept other ways:
- `workflows/` and `domain/` hold no mutable globals beyond `domain.snapshot_cache` (content-
  addressed, read-only snapshots), and no mutable class attributes: each instance's state is
  its own `Ledger`;
- nondeterministic calls (`datetime.now`, `time.time`, `random`, `uuid.uuid4`, I/O clients)
  are refused statically in `workflows/` and `domain/` by ruff (`workflows/ruff.toml`), which
  also covers `domain`, a package the sandbox never checked (it is passed through);
- the recorded histories replay under the SDK sandbox (`workflow_runner(strict=True)`,
  `tests/test_replay.py`), so a restricted call on a replayed path still fails CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import timedelta

import httpx
import redis.asyncio as aioredis
import structlog
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.apprise_channel import AppriseChannel
from activities.forward import ReportForwarder
from activities.incident_activities import IncidentActivities
from activities.mail import SmtpSettings
from activities.policy_activities import PolicyActivities
from activities.review_reader import ReviewReader
from activities.time_off_reader import TimeOffReader
from api.intake import ReportRouter
from core.action_links import ActionLinks, notification_links
from core.actor_signing import ActorSigner, ActorVerifier, actor_keyring
from core.config import Settings
from core.temporal_client import connect_temporal
from core.tracing import shutdown as shutdown_tracing
from core.tracing import tracing_interceptors
from worker.payload_walks import skip_unchanging_payload_walks
from workflows.catalog import PolicyCatalogWorkflow
from workflows.change_approval import ChangeApprovalWorkflow
from workflows.incident import IncidentWorkflow
from workflows.policy_text import PolicyTextWorkflow
from workflows.time_off import TimeOffWorkflow

PASSTHROUGH = ("domain", "pydantic", "pydantic_core", "annotated_types", "zoneinfo", "yaml",
               "opentelemetry")  # the tracing interceptor's spans, when tracing is on


# every workflow type the worker runs
WORKFLOWS = (IncidentWorkflow, PolicyCatalogWorkflow, ChangeApprovalWorkflow, PolicyTextWorkflow,
             TimeOffWorkflow)


def workflow_runner(*, strict: bool = False) -> WorkflowRunner:
    """How the worker runs workflows: unsandboxed (see above). `strict`: the SDK's sandbox,
    every workflow module re-imported per instance under its restrictions, with the pure
    packages passed through; slower and bigger, for the replay tests' determinism check."""
    if strict:
        return SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH))
    return UnsandboxedWorkflowRunner()


def build_worker(client: Client, settings: Settings, redis: aioredis.Redis,
                 http: httpx.AsyncClient, *, task_queue: str | None = None,
                 graceful_shutdown: timedelta = timedelta(0),
                 forwarder: ReportForwarder | None = None) -> Worker:
    """The worker for every workflow and activity; `forwarder` replaces the late-report
    forwarder (tests put a failing intake in front of the real one)."""
    activities = IncidentActivities(
        redis=redis, http=http, smtp=SmtpSettings.from_settings(settings),
        apprise=AppriseChannel(settings.apprise_config,
                               timeout_seconds=settings.http_timeout_seconds),
        public_url=settings.public_url,
        action_links=notification_links(ActionLinks.from_settings(settings),
                                        settings.public_url))
    policy = PolicyActivities(settings.playbooks_dir, settings.public_url)
    forwarder = forwarder or ReportForwarder(ReportRouter(client, redis, settings))
    if not settings.worker_keep_sdk_payload_walks:
        skip_unchanging_payload_walks()  # no codec, no external storage: see the module
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=[*activities.activities, policy.dry_run, ReviewReader(client).read_review,
                    TimeOffReader(client).read_time_off, forwarder.forward_reports],
        workflow_runner=workflow_runner(),
        interceptors=[ActorVerifier(actor_keyring(settings))],  # unsigned updates refused
        max_concurrent_activities=64,
        max_cached_workflows=settings.worker_max_cached_workflows,
        graceful_shutdown_timeout=graceful_shutdown,
    )


async def seed_on_first_start(client: Client, settings: Settings) -> None:
    """Publish the shipped playbooks and directory as active versions if the version store
    has none yet (bootstrap, no review); never fatal for the worker."""
    from core.policy_store import seed_shipped_versions

    try:
        await seed_shipped_versions(client, settings)
    except Exception:  # the worker must run even if the shipped files are broken
        task = asyncio.current_task()
        if task is not None and task.cancelling():  # stopped (the SDK re-raised it as its
            raise asyncio.CancelledError from None  # own error): not a failure
        structlog.get_logger("worker").exception("policy_seed_failed")


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime exporting the SDK's and the domain's metrics, when a port is set.

    Served in Prometheus text format on `CRISIS_WORKER_METRICS_HOST:PORT` by the SDK core
    (`PrometheusConfig`); the domain counters of activities/metrics.py use the same meter.
    """
    if not settings.worker_metrics_port:
        return None
    address = f"{settings.worker_metrics_host}:{settings.worker_metrics_port}"
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(
        bind_address=address, durations_as_seconds=True)))


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    # signed: the worker's first start seeds the version store through updates
    return await connect_temporal(settings, runtime=runtime, interceptors=[
        *tracing_interceptors(settings, "crisis-worker"), ActorSigner(actor_keyring(settings))])


async def run_worker(settings: Settings) -> None:
    log = structlog.get_logger("worker")
    runtime = metrics_runtime(settings)
    client = await connect(settings, runtime)
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:  # fail at start, with one line, rather than on the first activity
        await redis.ping()
    except BaseException:
        await redis.aclose()
        raise
    # base_url: playbook and directory URLs written as "/path" go to CRISIS_PUBLIC_URL
    async with httpx.AsyncClient(timeout=settings.http_timeout_seconds,
                                 base_url=settings.public_url) as http:
        # on SIGTERM, let running deliveries finish (compose allows 30 s to stop)
        worker = build_worker(client, settings, redis, http,
                              graceful_shutdown=timedelta(seconds=20))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("worker started", task_queue=settings.task_queue,
                 temporal=settings.temporal_address,
                 metrics_port=settings.worker_metrics_port or None)
        async with worker:
            # seeding runs beside the worker (its updates are answered by this very worker)
            # and never holds a stop: a bootstrap is idempotent, the next start seeds again
            seeding = asyncio.create_task(seed_on_first_start(client, settings))
            await stop.wait()
            if not seeding.done():
                log.warning("policy_seed_interrupted",
                            reason="stopped before the version store answered")
                seeding.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await seeding
        log.info("worker stopped")
    await redis.aclose()
    shutdown_tracing()
