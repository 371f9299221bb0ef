"""Fast failure: with Redis or Temporal down, the API answers 503 with `Retry-After` within
seconds, `/readyz` names the dependency, and nothing is half-created.

Each test kills a real server (SIGKILL, like a crash) and starts it again on the same port
with the same data: Redis with its append-only file, the Temporal dev server with its
SQLite file. The API runs in its own process (`tests.live_stack`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from core.config import ROOT
from tests.live_stack import LiveStack, RedisServer, TemporalServer, live_stack, wait_ready

pytestmark = pytest.mark.stack

FAST = 5.0  # seconds: the promise for a 503
COMMUNICATOR = "cara-comms"
ADMIN = "ada-admin"
DIRECTORY = ROOT / "config" / "directory.yaml"


def proposed_playbook() -> bytes:
    """The shipped viral-complaint playbook as a new version (what an admin proposes)."""
    text = (ROOT / "playbooks" / "viral-complaint.yaml").read_text()
    return re.sub(r"(?m)^version: *\d+", "version: 2", text, count=1).encode()


@dataclass
class Outage:
    stack: LiveStack
    redis: RedisServer
    temporal: TemporalServer
    http: httpx.AsyncClient


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer,
                                                                        TemporalServer]]:
    workdir = tmp_path_factory.mktemp("outage")
    redis, temporal = RedisServer(workdir), TemporalServer(workdir)
    redis.start()
    temporal.start()
    try:
        yield redis, temporal
    finally:
        redis.stop()
        temporal.stop()


@pytest.fixture(scope="module")
async def outage(servers: tuple[RedisServer, TemporalServer],
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Outage]:
    redis, temporal = servers
    workdir = tmp_path_factory.mktemp("outage-api")
    async with (live_stack(workdir, temporal.address, redis.url) as stack,
                httpx.AsyncClient(base_url=stack.url, timeout=30) as http):
        yield Outage(stack, redis, temporal, http)


async def call(o: Outage, method: str, path: str, as_: str = COMMUNICATOR,
               key: str | None = None, **kwargs: Any) -> tuple[httpx.Response, float]:
    headers = {**o.stack.auth(as_), **({"Idempotency-Key": key} if key else {}),
               **kwargs.pop("headers", {})}
    began = time.monotonic()
    response = await o.http.request(method, path, headers=headers, **kwargs)
    return response, time.monotonic() - began


def incident_body(title: str) -> dict[str, Any]:
    return {"title": title, "summary": "Outage test", "severity": "high",
            "playbook": "viral-complaint"}


async def an_open_task(o: Outage, incident_id: str) -> dict[str, Any]:
    for _ in range(300):
        response, _ = await call(o, "GET", f"/tasks?incident_id={incident_id}&state=open")
        items: list[dict[str, Any]] = response.json()["items"]
        if items:
            return items[0]
        await asyncio.sleep(0.1)
    raise AssertionError("no open task showed")


def assert_unavailable(response: httpx.Response, took: float, what: str) -> None:
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text}"
    assert response.json()["error"] == "Unavailable", what
    assert int(response.headers["retry-after"]) > 0, what
    assert took < FAST, f"{what} took {took:.1f}s"


async def test_redis_down(outage: Outage) -> None:
    o = outage
    opened, _ = await call(o, "POST", "/incidents", json=incident_body("Before Redis dies"))
    assert opened.status_code == 201, opened.text
    incident_id = opened.json()["id"]
    task = await an_open_task(o, incident_id)
    before = await o.stack.workflow_count()

    o.redis.kill()
    try:
        ready, took = await call(o, "GET", "/readyz")
        assert ready.status_code == 503 and took < FAST
        checks = ready.json()["checks"]
        assert checks["temporal"] == "ok" and checks["redis"] != "ok", checks

        keyed_message = "Written while Redis was down"
        attempts: list[tuple[Any, ...]] = [  # (method, path, kwargs[, as whom])
            ("GET", "/incidents", {}),
            ("GET", f"/incidents/{incident_id}", {}),
            ("GET", f"/incidents/{incident_id}/timeline", {}),
            ("GET", f"/incidents/{incident_id}/metrics", {}),
            ("GET", f"/incidents/{incident_id}/report", {}),
            ("GET", "/tasks", {}),
            ("GET", f"/tasks/{task['id']}", {}),
            ("GET", "/demo/sink/publish", {}),
            # an Idempotency-Key needs Redis: 503, not 500, and the request is not run
            ("POST", "/incidents", {"key": "redis-down-open",
                                    "json": incident_body("Opened while Redis was down")}),
            ("POST", "/reports", {"key": "redis-down-report",
                                  "json": {"summary": "Reported while Redis was down"}}),
            ("POST", f"/incidents/{incident_id}/status-updates",
             {"key": "redis-down-update", "json": {"message": keyed_message}}),
            ("POST", f"/tasks/{task['id']}/decision",
             {"key": "redis-down-decision", "json": {"decision": "approve"}}),
            ("POST", "/demo/sink/publish", {"json": {"text": "while Redis was down"}}),
            # without a key too: the incident would be half there (no read model, no
            # notification records)
            ("POST", "/incidents", {"json": incident_body("Unkeyed while Redis was down")}),
            ("POST", "/reports", {"json": {"summary": "Unkeyed while Redis was down"}}),
            ("POST", f"/incidents/{incident_id}/status-updates",
             {"json": {"message": keyed_message}}),
            ("POST", f"/incidents/{incident_id}/resolve", {"json": {"summary": "Not yet"}}),
            ("GET", f"/incidents/{incident_id}/drafts", {}),
            ("POST", f"/incidents/{incident_id}/drafts",
             {"json": {"node": "holding-statement", "text": "Drafted while down"}}),
            ("POST", f"/incidents/{incident_id}/publish-confirmations",
             {"json": {"step": "publish-statement"}}),
            ("POST", f"/tasks/{task['id']}/decision", {"json": {"decision": "approve"}},
             task["assignee"]),
            ("POST", f"/tasks/{task['id']}/delegate", {"json": {"to": "leo-legal"}},
             task["assignee"]),
            ("POST", f"/tasks/{task['id']}/reassign",
             {"json": {"to": "leo-legal", "reason": "down"}}, ADMIN),
            ("POST", f"/tasks/{task['id']}/cancel", {"json": {"reason": "down"}}, ADMIN),
        ]
        for method, path, kwargs, *who in attempts:
            response, took = await call(o, method, path, *who, **kwargs)
            assert_unavailable(response, took, f"{method} {path}")
    finally:
        o.redis.start()
    await wait_ready(o.stack.url)

    # nothing that answered 503 was done
    assert await o.stack.workflow_count() == before
    view, _ = await call(o, "GET", f"/incidents/{incident_id}")
    assert view.json()["incident"]["status"] == "open"
    timeline, _ = await call(o, "GET", f"/incidents/{incident_id}/timeline")
    messages = [e["details"].get("message") for e in timeline.json()["entries"]]
    assert keyed_message not in messages
    still, _ = await call(o, "GET", f"/tasks/{task['id']}")
    assert still.json()["task"]["state"] == "open"

    # and the same keys now work, once
    body = incident_body("Opened while Redis was down")
    first, _ = await call(o, "POST", "/incidents", key="redis-down-open", json=body)
    again, _ = await call(o, "POST", "/incidents", key="redis-down-open", json=body)
    assert first.status_code == 201, first.text
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert await o.stack.workflow_count() == before + 1


async def test_temporal_down(outage: Outage) -> None:
    o = outage
    opened, _ = await call(o, "POST", "/incidents", json=incident_body("Before Temporal dies"))
    assert opened.status_code == 201, opened.text
    incident_id = opened.json()["id"]
    task = await an_open_task(o, incident_id)
    before = await o.stack.workflow_count()

    o.temporal.kill()
    try:
        ready, took = await call(o, "GET", "/readyz")
        assert ready.status_code == 503 and took < FAST
        checks = ready.json()["checks"]
        assert checks["redis"] == "ok" and checks["temporal"] != "ok", checks

        writes: list[tuple[str, str, dict[str, Any], str]] = [
            ("POST", "/incidents", {"json": incident_body("Opened while Temporal was down")},
             COMMUNICATOR),
            ("POST", "/incidents", {"key": "temporal-down-open",
                                    "json": incident_body("Keyed while Temporal was down")},
             COMMUNICATOR),
            ("POST", "/reports", {"json": {"summary": "Reported while Temporal was down"}},
             COMMUNICATOR),
            ("POST", f"/incidents/{incident_id}/status-updates",
             {"json": {"message": "Temporal is down"}}, COMMUNICATOR),
            ("POST", f"/incidents/{incident_id}/resolve",
             {"json": {"summary": "Resolved while Temporal was down"}}, COMMUNICATOR),
            ("POST", f"/tasks/{task['id']}/decision",
             {"key": "temporal-down-decision", "json": {"decision": "approve"}},
             task["assignee"]),
            # every other write route: drafts, two-person publish, task moves, and the
            # reviewed policy (playbooks and the directory: propose, vote, roll back)
            ("POST", f"/incidents/{incident_id}/drafts",
             {"json": {"node": "holding-statement", "text": "Drafted while down"}},
             COMMUNICATOR),
            ("POST", f"/incidents/{incident_id}/publish-confirmations",
             {"json": {"step": "publish-statement"}}, COMMUNICATOR),
            ("POST", f"/tasks/{task['id']}/delegate", {"json": {"to": "leo-legal"}},
             task["assignee"]),
            ("POST", f"/tasks/{task['id']}/reassign",
             {"json": {"to": "leo-legal", "reason": "down"}}, ADMIN),
            ("POST", f"/tasks/{task['id']}/cancel", {"json": {"reason": "down"}}, ADMIN),
            ("POST", "/playbooks", {"content": proposed_playbook(),
                                    "headers": {"Content-Type": "application/yaml"}}, ADMIN),
            ("POST", "/playbooks/viral-complaint/rollback", {"json": {"to": 1}}, ADMIN),
            ("POST", "/playbooks/viral-complaint/versions/2/approve", {"json": {}}, ADMIN),
            ("POST", "/playbooks/viral-complaint/versions/2/reject",
             {"json": {"comment": "no"}}, ADMIN),
            ("POST", "/directory/versions", {"content": DIRECTORY.read_bytes(),
                                             "headers": {"Content-Type": "application/yaml"}},
             ADMIN),
            ("POST", "/directory/rollback", {"json": {"to": 1}}, ADMIN),
            ("POST", "/directory/versions/2/approve", {"json": {}}, ADMIN),
            ("POST", "/directory/versions/2/reject", {"json": {"comment": "no"}}, ADMIN),
            # an incident the read model doesn't know is asked of Temporal
            ("GET", "/incidents/inc-00000000000000000000-0", {}, COMMUNICATOR),
        ]
        for method, path, kwargs, as_ in writes:
            response, took = await call(o, method, path, as_, **kwargs)
            assert_unavailable(response, took, f"{method} {path}")
        # what the read model answers still works
        listed, _ = await call(o, "GET", f"/incidents/{incident_id}")
        assert listed.status_code == 200
    finally:
        o.temporal.start()
    await wait_ready(o.stack.url, within=60)

    # nothing that answered 503 was done: no incident, review or version was started,
    # no draft, delegation or move reached the timeline
    assert await o.stack.workflow_count() == before
    # (this stack's version store was never seeded: it still holds no version at all)
    versions, _ = await call(o, "GET", "/playbooks/viral-complaint/versions")
    assert versions.status_code == 404, versions.text
    assert versions.json()["error"] == "VersionNotFound", versions.text
    timeline, _ = await call(o, "GET", f"/incidents/{incident_id}/timeline")
    # (the playbook's own round-one draft, from its template, was there before)
    kinds = {e["kind"] for e in timeline.json()["entries"] if e["actor"] != "playbook"}
    assert not kinds & {"draft_submitted", "delegation", "task_reassigned", "task_cancelled",
                        "status_update", "decision", "resolved"}, kinds
    view, _ = await call(o, "GET", f"/incidents/{incident_id}")
    assert view.json()["incident"]["status"] == "open"
    assert {t["id"]: t["state"] for t in view.json()["tasks"]}[task["id"]] == "open"

    # and the same requests now work
    body = incident_body("Keyed while Temporal was down")
    created, _ = await call(o, "POST", "/incidents", key="temporal-down-open", json=body)
    assert created.status_code == 201, created.text
    decided, _ = await call(o, "POST", f"/tasks/{task['id']}/decision", task["assignee"],
                            key="temporal-down-decision", json={"decision": "approve"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["task"]["state"] == "approved"
    assert await o.stack.workflow_count() == before + 1
