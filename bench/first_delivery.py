"""`POST /incidents` -> first delivery, per channel, against the floor's start -> first activity.

One fresh dev server, one Redis, the real API app (in process, through `httpx.ASGITransport`,
as the API tests run it) and the real worker, in one process. Two one-step playbooks notify
the same person: `lat-log` on the `log` channel, `lat-apprise` on Apprise (`json://` to a
loopback HTTP receiver, issue 9). For each of `incidents` rounds one incident of each is
posted, one after the other, so both channels see the same load; a delivery is when the
receiver got the request (Apprise) or when the log channel's feed entry was stamped (log).
The floor is the bare workflow's start -> first activity start (`bench.bare_workflow`, whose
`bare_notify` here records when it started), measured on the same server right after, also
one at a time. (Until wave 3, session 19, the two channels' incidents were posted at once
while the floor started one workflow at a time, so every crisis-engine sample shared the
worker with a second start and the floor's never did.)
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import yaml
from temporalio import activity
from temporalio.worker import Worker

from bench.bare_workflow import BareWorkflow, bare_project
from bench.interpreter import dev_server_sqlite, percentile
from bench.rows import Row
from cli.users_cmd import issue_tokens
from core.config import Settings
from domain.loader import load_directory
from readmodel import keys
from tests.receivers import HttpReceiver
from tests.servers import redis_server
from worker.main import workflow_runner

DELIVERY_TIMEOUT = 30.0
TARGET = "target p99 <= 1.5x floor"


def _playbook(channel: str) -> dict[str, Any]:
    return {"id": f"lat-{channel}", "name": f"Latency via {channel}", "version": 1,
            "defaults": {"channels": [channel], "respect_working_hours": False},
            "steps": [{"id": "tell", "notify": {"to": [{"person": "cora"}],
                                                "message": "{{ incident.title }}"}},
                      {"id": "done", "resolution": {}}]}


def _write_config(workdir: Path, receiver: HttpReceiver) -> tuple[Path, Path, Path]:
    (workdir / "config").mkdir()
    (workdir / "playbooks").mkdir()
    directory = workdir / "config" / "directory.yaml"
    directory.write_text(yaml.safe_dump({"people": [
        {"id": "cora", "name": "Cora Communicator", "access": ["communicator"],
         "apprise_tags": ["cora-push"]}]}))
    (workdir / "config" / "routing.yaml").write_text(yaml.safe_dump(
        {"routes": {s: {"playbook": "lat-log"} for s in ("low", "medium", "high", "critical")}}))
    for channel in ("log", "apprise"):
        (workdir / "playbooks" / f"lat-{channel}.yaml").write_text(
            yaml.safe_dump(_playbook(channel)))
    apprise = workdir / "config" / "apprise.txt"
    apprise.write_text(f"cora-push=json://127.0.0.1:{receiver.port}/push\n")
    apprise.chmod(0o600)
    return directory, workdir / "playbooks", apprise


class _Deliveries:
    """Waits for an incident's first delivery on either channel; returns its perf time."""

    def __init__(self, redis: aioredis.Redis, receiver: HttpReceiver) -> None:
        self._redis = redis
        self._receiver = receiver

    async def apprise(self, title: str) -> float:
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while True:
            for request in self._receiver.requests:
                if title in request.body.decode(errors="replace"):
                    return request.received_at
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Apprise delivery for {title}")
            await asyncio.sleep(0.002)

    async def log(self, incident_id: str, wall_to_perf: float) -> float:
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while True:
            for raw in await self._redis.lrange(keys.notifications("cora"), 0, 20):
                entry = json.loads(raw)
                if entry["incident_id"] == incident_id:
                    return datetime.fromisoformat(entry["at"]).timestamp() + wall_to_perf
            if time.monotonic() > deadline:
                raise RuntimeError(f"no log delivery for {incident_id}")
            await asyncio.sleep(0.002)


async def _post(http: httpx.AsyncClient, token: str, playbook: str, title: str) -> str:
    response = await http.post("/incidents", headers={"Authorization": f"Bearer {token}"},
                               json={"title": title, "summary": "How fast does it arrive?",
                                     "severity": "high", "playbook": playbook})
    if response.status_code not in (200, 201):
        raise RuntimeError(f"POST /incidents: {response.status_code} {response.text[:300]}")
    incident_id: str = response.json()["id"]
    return incident_id


async def measure(incidents: int) -> dict[str, list[float]]:
    from api.main import create_app
    from worker.main import build_worker

    times: dict[str, list[float]] = {"log": [], "apprise": [], "floor": []}
    with tempfile.TemporaryDirectory(prefix="crisis-latency-") as tmp, \
            redis_server() as redis_url, HttpReceiver() as receiver:
        workdir = Path(tmp)
        directory, playbooks, apprise = _write_config(workdir, receiver)
        users = issue_tokens(load_directory(directory).definition,
                             workdir / "demo-tokens.json", workdir / "tokens.json")
        token = next(u["token"] for u in users if u["id"] == "cora")
        async with dev_server_sqlite() as env:
            settings = Settings(
                temporal_address=env.client.service_client.config.target_host,
                redis_url=redis_url, task_queue=f"latency-{uuid.uuid4().hex[:8]}",
                tokens_file=workdir / "tokens.json", directory_file=directory,
                playbooks_dir=playbooks, apprise_config=apprise,
                rate_limit_reports="100000/minute", rate_limit_incidents="100000/minute")
            app = create_app(settings)
            redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
            deliveries = _Deliveries(redis, receiver)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(trust_env=False) as hooks,
                build_worker(env.client, settings, redis, hooks),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                  base_url="http://bench", timeout=60) as http,
            ):
                async def one(channel: str, n: int) -> float:
                    title = f"latency {channel} {n} {uuid.uuid4().hex[:6]}"
                    wall_to_perf = time.perf_counter() - time.time()
                    started = time.perf_counter()
                    incident_id = await _post(http, token, f"lat-{channel}", title)
                    arrived = await (deliveries.apprise(title) if channel == "apprise"
                                     else deliveries.log(incident_id, wall_to_perf))
                    return arrived - started

                for n in range(incidents + 3):  # 3 warm-up rounds, not counted
                    log_s = await one("log", n)
                    apprise_s = await one("apprise", n)
                    if n >= 3:
                        times["log"].append(log_s)
                        times["apprise"].append(apprise_s)
            times["floor"] = await _floor(env.client, incidents)
            await redis.aclose()
    return times


async def _floor(client: Any, incidents: int) -> list[float]:
    started_at: dict[str, float] = {}

    @activity.defn(name="bare_notify")
    async def recording_notify(key: str) -> None:
        started_at.setdefault(key.split(":", 1)[0], time.perf_counter())

    queue = f"latency-floor-{uuid.uuid4().hex[:8]}"
    out: list[float] = []
    async with Worker(client, task_queue=queue, workflows=[BareWorkflow],
                      activities=[recording_notify, bare_project],
                      workflow_runner=workflow_runner()):
        for n in range(incidents + 3):
            workflow_id = f"floor-{uuid.uuid4().hex[:10]}"
            started = time.perf_counter()
            handle = await client.start_workflow(BareWorkflow.run, workflow_id, id=workflow_id,
                                                 task_queue=queue)
            deadline = time.monotonic() + DELIVERY_TIMEOUT
            while workflow_id not in started_at:
                if time.monotonic() > deadline:
                    raise RuntimeError("the bare workflow's first activity never started")
                await asyncio.sleep(0.002)
            if n >= 3:
                out.append(started_at[workflow_id] - started)
            await handle.terminate("latency measured")
    return out


async def first_delivery_rows(incidents: int) -> list[Row]:
    times = await measure(incidents)
    floor = times["floor"]
    rows = []
    for channel in ("log", "apprise"):
        for q in (0.5, 0.99):
            rows.append(Row(
                f"POST /incidents -> first delivery, {channel}, p{int(q * 100)} (ms, "
                f"n={len(times[channel])}; floor = bare start -> first activity)",
                percentile(times[channel], q) * 1000, floor=percentile(floor, q) * 1000,
                decimals=0, note=TARGET if q == 0.99 else ""))
    for q in (0.5, 0.99):
        rows.append(Row(f"first delivery, apprise vs log, p{int(q * 100)} (ms; "
                        "floor column = log)", percentile(times["apprise"], q) * 1000,
                        floor=percentile(times["log"], q) * 1000, decimals=0))
    return rows
