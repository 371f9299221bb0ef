"""Exactly-once publish, end to end: the worker is killed (SIGKILL) during a 3 s publish call.

Real processes: the `crisis api` and `crisis worker` commands on a Temporal dev server and
Redis; the publish receiver is a slow loopback server (3 s per new request) that honours
`Idempotency-Key` the way the README asks a receiver to. Five incidents, one after the
other, each have their publish call in flight when the worker dies; a new worker starts at
once. The action heartbeats, so the dead worker is noticed after 5 s and the call is sent
again with the same key: the receiver replays its first answer. Exactly one publish is
stored per incident, 5 of 5, and each timeline records the action once.

A sixth incident publishes at most once, to a receiver that can't deduplicate: the kill
leaves its outcome unknown, it is not sent again, and a communicator answers over HTTP
(`POST /incidents/{id}/actions/{step}/resolve-unknown`) that it was sent.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from cli.users_cmd import issue_tokens
from domain.loader import load_directory
from tests.api_fixtures import MATRIX_DIRECTORY, with_db
from tests.receivers import ReceivedRequest, SlowIdempotentReceiver
from tests.servers import free_port
from tests.test_scale_out import Proc

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent
TRIES = 5
COMMUNICATOR, APPROVER = "cora", "alex"


def playbook(pid: str, url: str, *, at_most_once: bool) -> dict[str, Any]:
    return {
        "id": pid, "name": pid, "version": 1,
        "defaults": {"channels": ["log"], "respect_working_hours": False},
        "steps": [
            {"id": "publish", "action": {
                "url": url, "at_most_once": at_most_once,
                "payload": {"text": "We are looking into it.", "incident": "{{incident.id}}"}}},
            {"id": "done", "resolution": {}},
        ],
    }


@dataclass
class Stack:
    worker: Proc
    http: httpx.AsyncClient
    tokens: dict[str, str]
    receiver: SlowIdempotentReceiver

    def auth(self, person: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[person]}"}

    async def open(self, title: str, pid: str) -> str:
        response = await self.http.post(
            "/incidents", headers=self.auth(COMMUNICATOR),
            json={"title": title, "summary": "Publish test", "severity": "high",
                  "playbook": pid})
        assert response.status_code == 201, response.text
        incident_id: str = response.json()["id"]
        return incident_id

    async def timeline(self, incident_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"/incidents/{incident_id}/timeline",
                                        headers=self.auth(COMMUNICATOR))
        entries: list[dict[str, Any]] = response.json()["entries"]
        return entries

    def arrived(self, incident_id: str) -> list[ReceivedRequest]:
        return [r for r in self.receiver.requests
                if r.headers.get("idempotency-key") == f"{incident_id}:publish"]

    def stored(self, incident_id: str) -> list[ReceivedRequest]:
        return [r for r in self.receiver.stored
                if r.headers.get("idempotency-key") == f"{incident_id}:publish"]


async def until(check: Any, what: str, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check() if asyncio.iscoroutinefunction(check) else check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {within}s"
        await asyncio.sleep(0.05)


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, redis_url: str, tmp_path: Path
                ) -> AsyncIterator[Stack]:
    (tmp_path / "config").mkdir()
    (tmp_path / "playbooks").mkdir()
    directory_file = tmp_path / "config" / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(MATRIX_DIRECTORY))
    users = issue_tokens(load_directory(directory_file).definition,
                         tmp_path / "demo-tokens.json", tmp_path / "tokens.json")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with SlowIdempotentReceiver(delay=3.0) as receiver:
        for pid, path, once in (("publish", "/dedup/statement", False),
                                ("publish-once", "/plain/statement", True)):
            (tmp_path / "playbooks" / f"{pid}.yaml").write_text(yaml.safe_dump(
                playbook(pid, receiver.url(path), at_most_once=once)))
        env = {**os.environ,
               "CRISIS_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
               "CRISIS_REDIS_URL": with_db(redis_url, 12),
               "CRISIS_TASK_QUEUE": f"once-{uuid.uuid4().hex[:8]}",
               "CRISIS_TOKENS_FILE": str(tmp_path / "tokens.json"),
               "CRISIS_DIRECTORY_FILE": str(directory_file),
               "CRISIS_PLAYBOOKS_DIR": str(tmp_path / "playbooks"),
               "CRISIS_PUBLIC_URL": url, "CRISIS_LOG_LEVEL": "WARNING",
               "PYTHONUNBUFFERED": "1"}
        crisis = [sys.executable, "-m", "cli.main"]
        worker = Proc("worker", [*crisis, "worker"], env, tmp_path / "worker.log")
        api = Proc("api", [*crisis, "api", "--port", str(port)], env, tmp_path / "api.log")
        worker.start()
        api.start()
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as http:
                async def ready() -> bool:
                    try:
                        return (await http.get("/readyz")).status_code == 200
                    except httpx.HTTPError:
                        return False
                await until(ready, "the API", within=60)
                yield Stack(worker=worker, http=http, receiver=receiver,
                            tokens={u["id"]: u["token"] for u in users})
        finally:
            api.stop()
            worker.stop()


async def test_the_worker_killed_during_a_3s_publish_stores_exactly_one_publish_5_of_5(
        stack: Stack) -> None:
    s = stack
    ids: list[str] = []
    once_id = ""
    for attempt in range(1, TRIES + 1):
        incident_id = await s.open(f"Publish under fire {attempt}", "publish")
        ids.append(incident_id)
        if attempt == 1:
            once_id = await s.open("Publish at most once", "publish-once")
        waiting = [incident_id, once_id] if attempt == 1 else [incident_id]
        await until(lambda ws=waiting: all(s.arrived(w) for w in ws),  # type: ignore[misc]
                    f"publish {attempt} to reach the receiver", within=60)
        assert not s.stored(incident_id), "the kill must hit the call in flight"
        s.worker.kill()  # mid-call: the receiver is still working on it
        s.worker.start()

    async def all_recorded() -> bool:
        timelines = [await s.timeline(i) for i in [*ids, once_id]]
        return all(any(e["kind"] in ("action_run", "action_outcome_unknown") for e in t)
                   for t in timelines)
    await until(all_recorded, "every publish to be recorded", within=60)

    for incident_id in ids:
        assert len(s.stored(incident_id)) == 1, incident_id  # exactly one publish stored
        assert len(s.arrived(incident_id)) >= 2  # it was sent again, with the same key
        runs = [e for e in await s.timeline(incident_id) if e["kind"] == "action_run"]
        assert len(runs) == 1 and runs[0]["details"]["status_code"] == 200

    # at most once: the receiver that can't deduplicate got it once and is not sent it again
    timeline = await s.timeline(once_id)
    assert [e["kind"] for e in timeline if e["kind"].startswith("action")] == [
        "action_sending", "action_outcome_unknown"]
    assert len(s.arrived(once_id)) == 1
    path = f"/incidents/{once_id}/actions/publish/resolve-unknown"
    refused = await s.http.post(path, headers=s.auth(APPROVER), json={"outcome": "sent"})
    assert refused.status_code == 403, refused.text
    answered = await s.http.post(path, headers=s.auth(COMMUNICATOR),
                                 json={"outcome": "sent", "comment": "It is on the site."})
    assert answered.status_code == 201, answered.text
    entry = answered.json()["entry"]
    assert (entry["kind"], entry["actor"], entry["details"]["resolution"]) == (
        "action_outcome_resolved", COMMUNICATOR, "sent")
    again = await s.http.post(path, headers=s.auth(COMMUNICATOR), json={"outcome": "resend"})
    assert (again.status_code, again.json()["error"]) == (409, "NothingToResolve")
    bad = await s.http.post(path, headers=s.auth(COMMUNICATOR), json={"outcome": "maybe"})
    assert bad.status_code == 422
    assert len(s.arrived(once_id)) == 1
