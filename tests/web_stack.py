"""A real stack for browser and SSE tests: uvicorn on a free loopback port and a worker,
on the suite's Temporal dev server and Redis, in a thread with its own event loop.

The browser tests use Playwright's sync API (pytest-playwright), which must not run inside
a running asyncio loop, and a browser needs a real socket: so the server lives in its own
thread. The directory has no working hours, so who gets a task never depends on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import uvicorn
import yaml
from temporalio.client import Client

from api.main import create_app
from cli.users_cmd import issue_tokens
from core.config import Settings
from core.payloads import DATA_CONVERTER
from domain.loader import load_directory
from tests.receivers import HttpReceiver
from tests.servers import free_port, wait_for_port

WEB_DIRECTORY: dict[str, Any] = {
    "people": [
        {"id": "rita", "name": "Rita Reporter", "access": ["reporter"]},
        {"id": "cora", "name": "Cora Communicator", "access": ["reporter", "communicator"]},
        {"id": "alex", "name": "Alex Lawyer", "roles": ["legal"],
         "access": ["reporter", "approver"]},
        {"id": "dora", "name": "Dora Deputy", "roles": ["legal"],
         "access": ["reporter", "approver"]},
        {"id": "abby", "name": "Abby Comms", "roles": ["comms"],
         "access": ["reporter", "approver"]},
        {"id": "liam", "name": "Liam Leader", "access": ["reporter", "leader"]},
        {"id": "olga", "name": "Olga On-call", "roles": [], "access": ["reporter", "approver"]},
        {"id": "adam", "name": "Adam Admin", "access": ["reporter", "admin"]},
    ],
    "roles": [{"id": "legal", "oncall": "legal-oncall"}, {"id": "comms"}],
    "rosters": [{"id": "legal-oncall", "members": ["olga"]}],
}

WEB_PLAYBOOKS: dict[str, dict[str, Any]] = {
    "holding": {
        "id": "holding", "name": "Holding statement", "version": 1,
        "severities": ["medium", "high"],
        # nobody here has working hours, so only time away (`/ui/away`) hands a task on
        "defaults": {"channels": ["log"]},
        "steps": [
            {"id": "approve-holding", "approval": {
                "title": "Approve the holding statement",
                "content": "We are aware of {{ incident.title }} and are looking into it.",
                "approvers": [{"person": "alex"}, {"person": "abby"}],
                "require": [{"role": "legal", "min": 1}, {"role": "comms", "min": 1}],
                "veto": ["legal"], "deadline": "4h",
                "escalation": [{"name": "wake the GC", "after": "2h",
                                "notify": [{"person": "liam"}]}]}},
            {"id": "done", "resolution": {}},
        ],
    },
    "redraft": {
        "id": "redraft", "name": "Drafted statement", "version": 1,
        "severities": ["high"],
        "defaults": {"channels": ["log"], "respect_working_hours": False},
        "steps": [
            {"id": "approve-statement", "approval": {
                "title": "Approve the statement",
                "content": "We are looking into {{ incident.title }}.",
                "drafts": {"start_from_template": True},
                "approvers": [{"person": "alex"}, {"person": "abby"}],
                "require": [{"role": "legal", "min": 1}, {"role": "comms", "min": 1}],
                "veto": ["legal"], "deadline": "4h"}},
            {"id": "done", "resolution": {}},
        ],
    },
    "heads-up": {
        "id": "heads-up", "name": "Heads-up only", "version": 1,
        "severities": ["low", "critical"],
        "defaults": {"channels": ["log"]},
        "steps": [
            {"id": "tell", "notify": {"to": [{"person": "liam"}], "message": "heads up"}},
            {"id": "done", "resolution": {}},
        ],
    },
}


def receiver_playbooks(receiver_url: str) -> dict[str, dict[str, Any]]:
    """Playbooks whose actions call the stack's receiver (`WebStack.receiver`): one that
    posts at most once, one that pauses scheduled posts until resolution."""
    return {
        "post-once": {
            "id": "post-once", "name": "Post once", "version": 1, "severities": ["high"],
            "defaults": {"channels": ["log"], "respect_working_hours": False},
            "steps": [
                {"id": "post", "action": {"url": f"{receiver_url}/post", "at_most_once": True,
                                          "payload": {"text": "We are looking into it."}}},
                {"id": "done", "resolution": {}},
            ],
        },
        "pause": {
            "id": "pause", "name": "Pause scheduled posts", "version": 1,
            "severities": ["high"],
            "defaults": {"channels": ["log"], "respect_working_hours": False},
            "steps": [
                {"id": "pause-posts", "action": {
                    "url": f"{receiver_url}/scheduler", "payload": {"command": "pause"},
                    "resume_on_resolve": {"url": f"{receiver_url}/scheduler",
                                          "payload": {"command": "resume"}}}},
                {"id": "done", "resolution": {}},
            ],
        },
    }


@dataclass
class WebStack:
    base_url: str
    tokens: dict[str, str]
    settings: Settings
    receiver: HttpReceiver  # what the playbooks' actions call (`receiver_playbooks`)

    def auth(self, person: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[person]}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)

    def api(self, method: str, path: str, as_: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.auth(as_), **kwargs.pop("headers", {})}
        with self.client() as http:
            return http.request(method, path, headers=headers, **kwargs)

    def open_incident(self, as_: str = "cora", playbook: str = "holding",
                      **fields: Any) -> str:
        body = {"title": f"Web test {uuid.uuid4().hex[:6]}", "summary": "A post spreads",
                "severity": "high", "playbook": playbook, **fields}
        response = self.api("POST", "/incidents", as_, json=body)
        assert response.status_code in (200, 201), response.text
        return str(response.json()["id"])

    def wait_tasks(self, incident_id: str, count: int, within: float = 20.0) -> dict[str, Any]:
        """{assignee: task} once the incident has `count` open tasks."""
        import time
        deadline = time.monotonic() + within
        while True:
            response = self.api("GET", f"/incidents/{incident_id}", "cora")
            if response.status_code == 200:
                tasks = {t["assignee"]: t for t in response.json()["open_tasks"]}
                if len(tasks) >= count:
                    return tasks
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} tasks in {incident_id}: {response.text}")
            time.sleep(0.1)


def write_config(workdir: Path, receiver_url: str) -> tuple[Path, Path]:
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "playbooks").mkdir(exist_ok=True)
    directory_file = workdir / "config" / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(WEB_DIRECTORY))
    (workdir / "config" / "routing.yaml").write_text(yaml.safe_dump(
        {"routes": {s: {"playbook": "holding", "severity": "high"}
                    for s in ("low", "medium", "high", "critical")}}))
    for name, playbook in {**WEB_PLAYBOOKS, **receiver_playbooks(receiver_url)}.items():
        (workdir / "playbooks" / f"{name}.yaml").write_text(yaml.safe_dump(playbook))
    return directory_file, workdir / "playbooks"


@contextlib.contextmanager
def web_stack(temporal_target: str, redis_url: str, workdir: Path) -> Iterator[WebStack]:
    from worker.main import build_worker

    with HttpReceiver() as receiver:
        directory_file, playbooks_dir = write_config(workdir, receiver.url(""))
        users = issue_tokens(load_directory(directory_file).definition,
                             workdir / "demo-tokens.json", workdir / "tokens.json")
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        settings = Settings(
            temporal_address=temporal_target, redis_url=redis_url,
            task_queue=f"web-test-{uuid.uuid4().hex[:8]}", tokens_file=workdir / "tokens.json",
            directory_file=directory_file, playbooks_dir=playbooks_dir, public_url=base_url,
            secret_keys=["web-test-signing-key-0123456789"])
        app = create_app(settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=2)
        server = uvicorn.Server(config)
        failure: list[BaseException] = []

        async def main() -> None:
            client = await Client.connect(temporal_target, data_converter=DATA_CONVERTER)
            redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
            async with (httpx.AsyncClient(base_url=base_url, timeout=10) as webhooks,
                        build_worker(client, settings, redis, webhooks)):
                await server.serve()
            await redis.aclose()

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # surfaced to the test that waits for the port
                failure.append(exc)

        thread = threading.Thread(target=run, name="web-stack", daemon=True)
        thread.start()
        try:
            wait_for_port(port, timeout=60)
        except TimeoutError:
            raise AssertionError(f"web stack did not start: {failure}") from None
        try:
            yield WebStack(base_url=base_url, tokens={u["id"]: u["token"] for u in users},
                           settings=settings, receiver=receiver)
        finally:
            server.should_exit = True
            thread.join(30)
