"""`python -m bench.intake_worker`: the worker for the intake storm bench's `batch-signal`
path: the shipped activities, and `IncidentWorkflow` with the prototype `add_reports` signal
(`bench.batch_workflow`). Configured by `CRISIS_*` like `crisis worker`."""

from __future__ import annotations

import asyncio
import signal

import httpx
import redis.asyncio as aioredis
from temporalio.client import Client
from temporalio.worker import Worker

from activities.forward import ReportForwarder
from activities.incident_activities import IncidentActivities
from activities.mail import SmtpSettings
from api.intake import ReportRouter
from bench.batch_workflow import BatchedIncidentWorkflow
from core.config import Settings, get_settings
from core.logging import configure_logging
from worker.main import connect, workflow_runner


def batch_worker(client: Client, settings: Settings, redis: aioredis.Redis,
                 http: httpx.AsyncClient) -> Worker:
    """`worker.main.build_worker`, with the prototype workflow."""
    activities = IncidentActivities(
        redis=redis, http=http,
        smtp=SmtpSettings(host=settings.smtp_host, port=settings.smtp_port,
                          sender=settings.smtp_sender))
    return Worker(client, task_queue=settings.task_queue, workflows=[BatchedIncidentWorkflow],
                  activities=[*activities.activities,
                              ReportForwarder(ReportRouter(client, redis, settings))
                              .forward_reports],
                  workflow_runner=workflow_runner(), max_concurrent_activities=64)


async def run() -> None:
    settings = get_settings()
    client = await connect(settings)
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    async with httpx.AsyncClient(timeout=settings.http_timeout_seconds,
                                 base_url=settings.public_url) as http:
        worker = batch_worker(client, settings, redis, http)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with worker:
            await stop.wait()
    await redis.aclose()


if __name__ == "__main__":
    configure_logging(get_settings().log_level)
    asyncio.run(run())
