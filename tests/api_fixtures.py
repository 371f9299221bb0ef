"""Fixtures for the API tests: the real app, a real worker, a real Temporal and Redis.

`demo_stack` runs the app on the demo directory and playbooks (`config/`, `playbooks/`);
`matrix_stack` runs it on a tiny directory in which each person has exactly one API role
and nobody has working hours, so authorization cells never depend on the clock.

Each stack has its own task queue and worker. The worker's HTTP client is routed into the
app itself (`httpx.ASGITransport`), so the playbooks' webhooks and actions, which point at
`/demo/sink/...` (relative to the public URL), land in the app's demo sink like under `make run`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis.asyncio as aioredis
import yaml
from fastapi import FastAPI
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from cli.users_cmd import issue_tokens
from core.actor_signing import key_file
from core.config import ROOT, Settings
from domain.loader import load_directory

T = TypeVar("T")

MATRIX_DIRECTORY: dict[str, Any] = {
    "people": [
        {"id": "rita", "name": "Rita Reporter", "access": ["reporter"], "deputies": ["dora"]},
        {"id": "cora", "name": "Cora Communicator", "access": ["communicator"],
         "deputies": ["dora"]},
        {"id": "alex", "name": "Alex Approver", "roles": ["legal"], "access": ["approver"]},
        {"id": "abby", "name": "Abby Approver", "roles": ["legal"], "access": ["approver"]},
        {"id": "liam", "name": "Liam Leader", "access": ["leader"], "deputies": ["dora"]},
        {"id": "adam", "name": "Adam Admin", "access": ["admin"], "deputies": ["dora"]},
        {"id": "dora", "name": "Dora Deputy", "roles": ["legal"], "access": ["approver"]},
    ],
    "roles": [{"id": "legal"}],
}

# not dora: she is the deputy every task holder may delegate to (by role or as a named deputy)
MATRIX_TASK_HOLDERS = ("rita", "cora", "alex", "abby", "liam", "adam")

MATRIX_PLAYBOOKS: dict[str, dict[str, Any]] = {
    # one task for each role's person (and abby); one approval leaves the node pending
    "matrix": {
        "id": "matrix", "name": "Everyone approves", "version": 1,
        "defaults": {"channels": ["log"], "respect_working_hours": False},
        "steps": [
            {"id": "sign-off", "approval": {
                "title": "Sign off", "content": "Approve {{ incident.title }}",
                "approvers": [{"person": p} for p in MATRIX_TASK_HOLDERS],
                "quorum": "all", "deadline": "4h"}},
            {"id": "done", "resolution": {}},
        ],
    },
    # a statement written during the incident: legal drafts, two-person publish
    "matrix-drafts": {
        "id": "matrix-drafts", "name": "Drafted statement", "version": 1,
        "defaults": {"channels": ["log"], "respect_working_hours": False},
        "steps": [
            {"id": "statement", "approval": {
                "title": "Statement", "drafts": {},
                "approvers": [{"person": "alex"}, {"person": "abby"}],
                "quorum": "all", "veto": ["legal"], "deadline": "4h",
                "on_approved": [{"id": "publish", "action": {
                    "url": "/demo/sink/publish", "publishes": "statement",
                    "confirm": "two_person",
                    "payload": {"incident": "{{ incident.id }}",
                                "text": "{{ steps.statement.content }}"}}}]}},
            {"id": "done", "resolution": {}},
        ],
    },
    # no approvals at all: nobody holds a task
    "matrix-quiet": {
        "id": "matrix-quiet", "name": "Notify only", "version": 1,
        "defaults": {"channels": ["log"]},
        "steps": [
            {"id": "tell", "notify": {"to": [{"person": "liam"}], "message": "heads up"}},
            {"id": "done", "resolution": {}},
        ],
    },
}


@dataclass
class ApiStack:
    app: FastAPI
    http: httpx.AsyncClient
    settings: Settings
    tokens: dict[str, str]
    redis: aioredis.Redis
    env: WorkflowEnvironment

    @staticmethod
    async def eventually(probe: Callable[[], Awaitable[T | None]], within: float = 20.0,
                         what: str = "condition") -> T:
        return await eventually(probe, within, what)

    def auth(self, person_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[person_id]}"}

    async def call(self, method: str, path: str, as_: str | None = None, **kwargs: Any
                   ) -> httpx.Response:
        headers = {**(self.auth(as_) if as_ else {}), **kwargs.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def open_incident(self, as_: str, playbook: str, **fields: Any) -> dict[str, Any]:
        body = {"title": "Test incident", "summary": "Something is spreading",
                "severity": "high", "playbook": playbook, **fields}
        response = await self.call("POST", "/incidents", as_, json=body)
        assert response.status_code in (200, 201), response.text
        result: dict[str, Any] = response.json()
        return result

    async def matrix_incident(self) -> dict[str, Any]:
        """A new `matrix` incident once its tasks exist: {"id", "tasks": {holder: task id}}."""
        opened = await self.open_incident("cora", "matrix")

        async def tasks() -> dict[str, str] | None:
            view = await self.view(opened["id"], "adam")
            found = {t["assignee"]: t["id"] for t in view["tasks"]}
            return found if len(found) == len(MATRIX_TASK_HOLDERS) else None
        return {"id": opened["id"], "tasks": await eventually(tasks, what="the matrix tasks")}

    async def view(self, incident_id: str, as_: str) -> dict[str, Any]:
        response = await self.call("GET", f"/incidents/{incident_id}", as_)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float = 20.0,
                     what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)


def with_db(redis_url: str, db: int) -> str:
    """Each stack lists only its own incidents: its own Redis database."""
    return redis_url.rsplit("/", 1)[0] + f"/{db}"


# Shared stacks open many incidents from one token: keep the intake limits out of the way
# (tests/test_ratelimit.py runs its own stack with tight ones).
GENEROUS_LIMITS: dict[str, Any] = {"rate_limit_reports": "100000/minute",
                                   "rate_limit_incidents": "100000/minute"}


async def _run_stack(env: WorkflowEnvironment, redis_url: str, workdir: Path,
                     directory_file: Path, playbooks_dir: Path,
                     **overrides: Any) -> AsyncIterator[ApiStack]:
    from worker.main import build_worker

    users = issue_tokens(load_directory(directory_file).definition, workdir / "demo-tokens.json",
                         workdir / "tokens.json")
    settings = Settings(
        temporal_address=env.client.service_client.config.target_host,
        redis_url=redis_url, task_queue=f"api-test-{uuid.uuid4().hex[:8]}",
        tokens_file=workdir / "tokens.json", directory_file=directory_file,
        playbooks_dir=playbooks_dir, demo_mode=True,
        # the actor key every test client signs with (tests.workflow_harness.signer_for_tests),
        # so a test may also send commands straight to Temporal, as the API would
        actor_key_file=key_file(Settings()), **{**GENEROUS_LIMITS, **overrides})
    app = create_app(settings)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                          base_url="http://127.0.0.1:8000") as webhooks,
        build_worker(env.client, settings, redis, webhooks),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                          timeout=60) as http,
    ):
        yield ApiStack(app=app, http=http, settings=settings, redis=redis, env=env,
                       tokens={u["id"]: u["token"] for u in users})
    await redis.aclose()


@pytest.fixture(scope="session")
async def demo_stack(dev_env: WorkflowEnvironment, redis_url: str,
                     tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiStack]:
    workdir = tmp_path_factory.mktemp("demo-stack")
    async for stack in _run_stack(dev_env, with_db(redis_url, 1), workdir,
                                  ROOT / "config" / "directory.yaml", ROOT / "playbooks"):
        yield stack


@pytest.fixture(scope="session")
async def matrix_stack(dev_env: WorkflowEnvironment, redis_url: str,
                       tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiStack]:
    workdir = tmp_path_factory.mktemp("matrix-stack")
    async for stack in _run_stack(dev_env, with_db(redis_url, 2), workdir,
                                  *write_matrix_config(workdir)):
        yield stack


def write_matrix_config(workdir: Path) -> tuple[Path, Path]:
    """The matrix directory, routing and playbooks under `workdir`: (directory, playbooks)."""
    (workdir / "config").mkdir()
    (workdir / "playbooks").mkdir()
    directory_file = workdir / "config" / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(MATRIX_DIRECTORY))
    (workdir / "config" / "routing.yaml").write_text(yaml.safe_dump(
        {"routes": {s: {"playbook": "matrix"} for s in ("low", "medium", "high", "critical")}}))
    for name, playbook in MATRIX_PLAYBOOKS.items():
        (workdir / "playbooks" / f"{name}.yaml").write_text(yaml.safe_dump(playbook))
    return directory_file, workdir / "playbooks"
