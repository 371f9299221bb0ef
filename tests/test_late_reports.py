"""Reports signalled while an incident resolves are handed on to the next incident for their
key (`domain.forwarding`); the reporters were already told "accepted". This holds however
long the hand-over fails: past the activity's hour of retries, the resolved run keeps trying
on a durable timer instead of dropping them (patch `forward-late-reports-until-placed`).

Real servers: the time-skipping Temporal server (an hour and more of retries pass in
seconds), the real worker, Redis, and the real forwarder behind a switch that refuses the
first attempts, as an intake that is down would.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import redis.asyncio as aioredis
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.forward import ReportForwarder
from api.intake import ReportRouter
from core.config import Settings
from domain.forwarding import FORWARD_ACTIVITY, ForwardReports
from domain.ids import dedup_incident_id
from domain.incident import Report, ResolveRequest
from tests.factories import snapshot, start_input
from tests.workflow_harness import fresh_time_env
from worker.main import build_worker
from workflows.incident import FORWARD_RETRY, IncidentWorkflow

PLAYBOOK = {
    "id": "tell", "name": "Tell social", "version": 1,
    "defaults": {"channels": ["log"], "respect_working_hours": False},
    "steps": [
        {"id": "tell-social", "notify": {"to": [{"person": "sam-social"}],
                                         "message": "{{ incident.title }} is spreading"}},
        {"id": "done", "resolution": {}},
    ],
}


class IntakeDown(ReportForwarder):
    """The real forwarder, refusing its first `failures` attempts (retryable)."""

    def __init__(self, router: ReportRouter, failures: int) -> None:
        super().__init__(router)
        self.failures = failures
        self.attempts = 0

    @activity.defn(name=FORWARD_ACTIVITY)
    async def forward_reports(self, request: ForwardReports) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ApplicationError("intake unavailable")
        await super().forward_reports(request)


@dataclass
class Stack:
    env: WorkflowEnvironment
    settings: Settings
    forwarder: IntakeDown


@pytest.fixture
async def stack(redis_url: str) -> AsyncIterator[Stack]:
    async with fresh_time_env() as env:
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        await redis.flushall()
        settings = Settings(redis_url=redis_url, task_queue=f"late-{uuid.uuid4().hex[:8]}")
        # an hour of activity retries fails, and two of the catch-up tries after it
        down = IntakeDown(ReportRouter(env.client, redis, settings),
                          failures=FORWARD_RETRY.maximum_attempts + 2)
        async with httpx.AsyncClient(trust_env=False) as http, \
                build_worker(env.client, settings, redis, http, forwarder=down):
            yield Stack(env, settings, down)
        await redis.aclose()


async def reports_on(handle: WorkflowHandle[IncidentWorkflow, object]) -> Counter[str]:
    entries = await handle.query(IncidentWorkflow.timeline)
    return Counter(str(e.details["report_id"]) for e in entries
                   if e.kind in ("opened", "report_added"))


async def test_late_reports_are_handed_on_after_more_than_an_hour_of_failures(
        stack: Stack) -> None:
    settings, down, client = stack.settings, stack.forwarder, stack.env.client
    key = f"post:{uuid.uuid4().hex[:8]}"
    start = start_input(snapshot(PLAYBOOK), dedup_key=key)
    handle = await client.start_workflow(IncidentWorkflow.run, start, id=start.incident_id,
                                         task_queue=settings.task_queue)
    resolving = await handle.start_update(
        IncidentWorkflow.resolve, ResolveRequest(request_id=uuid.uuid4().hex,
                                                 actor="sam-social", summary="handled"),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    late = [Report(id=f"late-{n}", summary=f"Late report {n}", reported_by="ray-reporter")
            for n in range(3)]
    await handle.signal("add_reports", late)
    await resolving.result()
    await handle.result()  # completes only once the reports are placed

    # more attempts than the activity's hour of retries: the run did not give up
    assert down.attempts == down.failures + 1 > FORWARD_RETRY.maximum_attempts
    first = client.get_workflow_handle_for(IncidentWorkflow.run, start.incident_id)
    assert not {r.id for r in late} & set(await reports_on(first))
    # the key's first keyed incident (this test started the resolved one by hand, unkeyed)
    next_handle = client.get_workflow_handle_for(
        IncidentWorkflow.run, dedup_incident_id(f"key:{key}", 0, settings.id_secret_bytes()))
    assert await reports_on(next_handle) == Counter(r.id for r in late)  # each once, none lost
