"""An Idempotency-Key holds for the life of the operation, however long it runs.

The in-flight marker's TTL is set to 1 s here (`idempotency_in_flight_ttl_seconds`, 15 s
by default), so "in flight for many TTLs" takes seconds, not minutes. A request is kept in
flight for real: no worker polls its task queue, so its update-with-start waits, as it does
while the worker is down in production.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import yaml
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from cli.users_cmd import issue_tokens
from core.config import ROOT, Settings
from domain.loader import load_directory
from tests.api_fixtures import eventually, with_db
from tests.factories import SIGN_OFF_PEOPLE, sign_off_playbook
from tests.servers import free_port

TTL = 1.0
DIRECTORY: dict[str, Any] = {
    "people": SIGN_OFF_PEOPLE,
    "roles": [{"id": "legal"}],
}
PLAYBOOK = sign_off_playbook("slow", "Slow")
BODY = {"title": "Slow to open", "summary": "the worker is down", "severity": "high",
        "playbook": "slow"}  # no dedup_key: only the Idempotency-Key makes a retry join
REPORT = {"summary": "the worker is down", "severity": "high"}  # routed to `slow`
# the two ways a request opens an incident, and where its answer names it
OPENERS = [pytest.param("/incidents", BODY, "id", id="incidents"),
           pytest.param("/reports", REPORT, "incident_id", id="reports")]


@dataclass
class Setup:
    settings: Settings
    token: str
    env: WorkflowEnvironment

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def child_env(self) -> dict[str, str]:
        s = self.settings
        return {**os.environ, "CRISIS_TEMPORAL_ADDRESS": s.temporal_address,
                "CRISIS_REDIS_URL": s.redis_url, "CRISIS_TASK_QUEUE": s.task_queue,
                "CRISIS_TOKENS_FILE": str(s.tokens_file),
                "CRISIS_DIRECTORY_FILE": str(s.directory_file),
                "CRISIS_PLAYBOOKS_DIR": str(s.playbooks_dir), "CRISIS_LOG_LEVEL": "WARNING",
                "CRISIS_IDEMPOTENCY_IN_FLIGHT_TTL_SECONDS": str(TTL),
                "PYTHONPATH": str(ROOT)}

    async def workflows(self) -> list[str]:
        query = f"TaskQueue = '{self.settings.task_queue}'"
        return [w.id async for w in self.env.client.list_workflows(query)]


@pytest.fixture
async def setup(dev_env: WorkflowEnvironment, redis_url: str, tmp_path: Path) -> Setup:
    (tmp_path / "config").mkdir()
    (tmp_path / "playbooks").mkdir()
    directory_file = tmp_path / "config" / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(DIRECTORY))
    (tmp_path / "playbooks" / "slow.yaml").write_text(yaml.safe_dump(PLAYBOOK))
    (tmp_path / "config" / "routing.yaml").write_text(yaml.safe_dump(  # for POST /reports
        {"routes": {s: {"playbook": "slow"} for s in ("low", "medium", "high", "critical")}}))
    users = issue_tokens(load_directory(directory_file).definition,
                         tmp_path / "demo-tokens.json", tmp_path / "tokens.json")
    settings = Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        redis_url=with_db(redis_url, 6), task_queue=f"idem-{uuid.uuid4().hex[:8]}",
        tokens_file=tmp_path / "tokens.json", directory_file=directory_file,
        playbooks_dir=tmp_path / "playbooks", idempotency_in_flight_ttl_seconds=TTL)
    token = next(u["token"] for u in users if u["id"] == "cora")
    return Setup(settings, token, dev_env)


@asynccontextmanager
async def api(setup: Setup) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(setup.settings)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                  base_url="http://testserver", timeout=120) as http):
        yield http


@asynccontextmanager
async def worker(setup: Setup) -> AsyncIterator[None]:
    from worker.main import build_worker

    redis = aioredis.Redis.from_url(setup.settings.redis_url, decode_responses=True)
    async with (httpx.AsyncClient() as http,
                build_worker(setup.env.client, setup.settings, redis, http)):
        yield
    await redis.aclose()


async def marker_ttl(setup: Setup, key: str) -> int:
    redis = aioredis.Redis.from_url(setup.settings.redis_url, decode_responses=True)
    try:
        return int(await redis.pttl(f"ce:idem:http:cora:{key}"))
    finally:
        await redis.aclose()


async def test_a_long_request_keeps_its_key_and_a_retry_never_opens_a_second_incident(
        setup: Setup) -> None:
    key = f"slow-{uuid.uuid4().hex}"
    headers = {**setup.headers, "Idempotency-Key": key}
    async with api(setup) as http:
        first = asyncio.ensure_future(http.post("/incidents", json=BODY, headers=headers))
        await eventually(setup.workflows, what="the first attempt to start its workflow")
        # in flight for five marker lifetimes (like 600 s with the default 120 s), retried
        # with the key in each of them: every retry is told to wait, none runs
        for _ in range(5):
            await asyncio.sleep(TTL)
            assert not first.done()
            assert await marker_ttl(setup, key) > 0  # renewed, not expired
            retry = await http.post("/incidents", json=BODY, headers=headers)
            assert (retry.status_code, retry.json()["error"]) == (409, "RequestInFlight")
            assert int(retry.headers["retry-after"]) >= 1
        assert len(await setup.workflows()) == 1

        async with worker(setup):  # the worker is back: the first attempt completes
            opened = await asyncio.wait_for(first, 60)
            assert opened.status_code == 201, opened.text
            again = await http.post("/incidents", json=BODY, headers=headers)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == opened.json()["id"]
    assert await setup.workflows() == [opened.json()["id"]]


@pytest.mark.parametrize(("path", "body", "id_field"), OPENERS)
async def test_a_crash_mid_request_lets_the_retry_join_the_first_attempt(
        setup: Setup, path: str, body: dict[str, Any], id_field: str) -> None:
    """The API process dies (SIGKILL) while a keyed request is in flight: nothing renews
    the marker, it lapses, and the retry runs again; it must join the incident the first
    attempt started, not open a second one (for `POST /incidents` and for a report that
    opens one through the routing table)."""
    key = f"crash-{uuid.uuid4().hex}"
    headers = {**setup.headers, "Idempotency-Key": key}
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "api", "--port", str(port),
        env=setup.child_env(), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120,
                                     trust_env=False) as http:
            async def up() -> bool:
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False
            await eventually(up, what="the API subprocess")
            first = asyncio.ensure_future(http.post(path, json=body, headers=headers))
            started = await eventually(setup.workflows, what="the first attempt's workflow")
            assert await marker_ttl(setup, key) > 0
            proc.send_signal(signal.SIGKILL)
            with pytest.raises(httpx.TransportError):
                await asyncio.wait_for(first, 30)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    async def lapsed() -> bool:
        return await marker_ttl(setup, key) == -2  # the key no longer exists
    await eventually(lapsed, within=5 * TTL + 5, what="the orphaned marker to expire")

    async with api(setup) as http, worker(setup):
        retry = await http.post(path, json=body, headers=headers)
    assert retry.status_code == 201, retry.text
    assert retry.json()["created"] is True  # the retry is the same report that opened it
    assert [retry.json()[id_field]] == started
    assert await setup.workflows() == started
