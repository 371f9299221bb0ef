"""Scale-out on the embedded stack: two workers and two API processes behind one Temporal.

Both APIs open incidents and decide their tasks (6 approvers each, all required). Mid-run,
with decisions in flight, one worker and one API are killed with SIGKILL. A request the dead
API never answered is retried on the other one, with a new idempotency key, as a client
would. At the end every incident has completed, and its recorded timeline (the workflow's
result, from Temporal) holds exactly one decision per task: none lost, none duplicated.

The processes are the real `crisis worker` and `crisis api` commands; Temporal is the dev
server and Redis/Valkey the session's server (its own database here).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from cli.users_cmd import issue_tokens
from domain.loader import load_directory
from tests.api_fixtures import MATRIX_DIRECTORY, with_db
from tests.servers import free_port
from workflows.incident import IncidentWorkflow

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent
INCIDENTS = 10
OPENER = "cora"
DECISIONS_BEFORE_KILL = 2  # per incident, of 6; the rest race the kill or come after it
# everyone with an inbox must approve; no working hours, so nothing depends on the clock
HOLDERS = ("alex", "abby", "dora", "cora", "liam", "adam")
PLAYBOOK: dict[str, Any] = {
    "id": "scale", "name": "Six approvals", "version": 1,
    "defaults": {"channels": ["log"], "respect_working_hours": False},
    "steps": [
        {"id": "sign-off", "approval": {
            "title": "Sign off", "content": "Approve {{ incident.title }}",
            "approvers": [{"person": p} for p in HOLDERS], "quorum": "all", "deadline": "4h"}},
        {"id": "done", "resolution": {}},
    ],
}


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, process_group=0)

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@dataclass
class Cluster:
    workers: list[Proc]
    apis: list[Proc]
    urls: list[str]
    tokens: dict[str, str]
    workdir: Path
    retried: Counter[str] = field(default_factory=Counter)

    def alive_urls(self) -> list[str]:
        return [url for url, api in zip(self.urls, self.apis, strict=True)
                if api.proc is not None and api.proc.poll() is None]


def _write_matrix_config(workdir: Path) -> tuple[Path, Path]:
    (workdir / "config").mkdir()
    (workdir / "playbooks").mkdir()
    directory_file = workdir / "config" / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(MATRIX_DIRECTORY))
    (workdir / "playbooks" / "scale.yaml").write_text(yaml.safe_dump(PLAYBOOK))
    return directory_file, workdir / "playbooks"


@pytest.fixture
def cluster(dev_env: WorkflowEnvironment, redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    directory_file, playbooks_dir = _write_matrix_config(tmp_path)
    users = issue_tokens(load_directory(directory_file).definition,
                         tmp_path / "demo-tokens.json", tmp_path / "tokens.json")
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    env = {**os.environ,
           "CRISIS_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
           "CRISIS_REDIS_URL": with_db(redis_url, 11),
           "CRISIS_TASK_QUEUE": f"scale-{uuid.uuid4().hex[:8]}",
           "CRISIS_TOKENS_FILE": str(tmp_path / "tokens.json"),
           "CRISIS_DIRECTORY_FILE": str(directory_file),
           "CRISIS_PLAYBOOKS_DIR": str(playbooks_dir),
           "CRISIS_PUBLIC_URL": urls[1], "PYTHONUNBUFFERED": "1"}
    crisis = [sys.executable, "-m", "cli.main"]
    workers = [Proc(f"worker-{i}", [*crisis, "worker"], env, tmp_path / f"worker-{i}.log")
               for i in (1, 2)]
    apis = [Proc(f"api-{i}", [*crisis, "api", "--port", str(port)], env,
                 tmp_path / f"api-{i}.log") for i, port in enumerate(ports, start=1)]
    every = [*workers, *apis]
    try:
        for proc in every:
            proc.start()
        deadline = time.monotonic() + 60
        for url in urls:
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                for proc in every:
                    assert proc.proc is not None and proc.proc.poll() is None, (
                        f"{proc.name} exited:\n{proc.log.read_text()[-3000:]}")
                assert time.monotonic() < deadline, f"{url} never became ready"
                time.sleep(0.2)
        yield Cluster(workers=workers, apis=apis, urls=urls, workdir=tmp_path,
                      tokens={u["id"]: u["token"] for u in users})
    finally:
        for proc in reversed(every):
            proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def send(cluster: Cluster, http: httpx.AsyncClient, prefer: int, method: str, path: str,
               as_: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """Send to API `prefer`; if it is dead (or dies before answering), to a live one."""
    urls = [cluster.urls[prefer], *(u for u in cluster.urls if u != cluster.urls[prefer])]
    for attempt, url in enumerate(urls):
        headers = {"Authorization": f"Bearer {cluster.tokens[as_]}",
                   "Idempotency-Key": f"scale-{uuid.uuid4().hex}"}
        try:
            return await http.request(method, f"{url}{path}", json=body, headers=headers)
        except httpx.TransportError:
            if attempt == len(urls) - 1:
                raise
            cluster.retried[f"{method} {path.split('/')[1]}"] += 1
    raise AssertionError("unreachable")


async def eventually(probe: Any, what: str, within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(0.2)


async def decide(cluster: Cluster, http: httpx.AsyncClient, prefer: int, task_id: str,
                 holder: str) -> str:
    """Approve; a 409 means an earlier attempt (on the API that died) already landed."""
    response = await send(cluster, http, prefer, "POST", f"/tasks/{task_id}/decision", holder,
                          {"decision": "approve", "comment": "scale-out"})
    assert response.status_code in (200, 409), response.text
    return "ok" if response.status_code == 200 else "already"


def processed_activities(log: Path) -> int:
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "notify_done":
            count += 1
    return count


async def test_two_workers_two_apis_survive_losing_one_of_each(
        cluster: Cluster, http: httpx.AsyncClient, dev_env: WorkflowEnvironment) -> None:
    began = time.monotonic()
    opened = await asyncio.gather(*(
        send(cluster, http, i % 2, "POST", "/incidents", OPENER, {
            "title": f"Scale-out incident {i}", "summary": "load", "severity": "high",
            "playbook": "scale"}) for i in range(INCIDENTS)))
    assert all(r.status_code == 201 for r in opened), [r.text for r in opened]
    incident_ids = [r.json()["id"] for r in opened]
    opened_in = time.monotonic() - began

    async def tasks_of(incident_id: str) -> dict[str, str] | None:
        response = await send(cluster, http, 1, "GET",
                              f"/tasks?incident_id={incident_id}&state=open", OPENER)
        found = {t["assignee"]: t["id"] for t in response.json()["items"]}
        return found if len(found) == len(HOLDERS) else None
    tasks = dict(zip(incident_ids, await asyncio.gather(*(
        eventually(lambda i=i: tasks_of(i), f"the tasks of {i}") for i in incident_ids)),
        strict=True))

    # a first round of decisions, spread over both APIs
    plan = [(incident_id, holder, tasks[incident_id][holder])
            for incident_id in incident_ids for holder in HOLDERS]
    first = [p for p in plan if HOLDERS.index(p[1]) < DECISIONS_BEFORE_KILL]
    rest = [p for p in plan if p not in first]
    results = await asyncio.gather(*(decide(cluster, http, n % 2, task_id, holder)
                                     for n, (_, holder, task_id) in enumerate(first)))
    assert set(results) == {"ok"}
    busy = [processed_activities(w.log) for w in cluster.workers]
    assert all(n > 0 for n in busy), f"both workers should share the load: {busy}"

    # the rest race the kill: half of them were sent to the API that dies
    racing = [asyncio.create_task(decide(cluster, http, n % 2, task_id, holder))
              for n, (_, holder, task_id) in enumerate(rest)]
    await asyncio.sleep(0.05)
    killed_at = time.monotonic()
    cluster.workers[0].kill()
    cluster.apis[0].kill()
    outcomes = Counter(await asyncio.gather(*racing))
    assert cluster.alive_urls() == [cluster.urls[1]]
    assert cluster.retried["POST tasks"] > 0, "no decision was caught by the API's death"

    resolved = await asyncio.gather(*(
        send(cluster, http, 0, "POST", f"/incidents/{incident_id}/resolve", OPENER,
             {"summary": "scale-out done"}) for incident_id in incident_ids))
    assert all(r.status_code == 200 for r in resolved), [r.text for r in resolved]

    finals = await asyncio.wait_for(asyncio.gather(*(
        dev_env.client.get_workflow_handle_for(IncidentWorkflow.run, incident_id).result()
        for incident_id in incident_ids)), timeout=90)
    completed_in = time.monotonic() - began

    for incident_id, final in zip(incident_ids, finals, strict=True):
        decisions = Counter(e.details["task_id"] for e in final.timeline if e.kind == "decision")
        expected = set(tasks[incident_id].values())
        assert set(decisions) == expected, f"{incident_id}: lost {expected - set(decisions)}"
        assert all(n == 1 for n in decisions.values()), f"{incident_id}: duplicated {decisions}"
        states = {t.id: t.state for t in final.view.tasks}
        assert all(states[task_id] == "approved" for task_id in expected), states
        assert final.view.incident.status == "resolved"
        assert [n.outcome for n in final.view.nodes] == ["approved"]

    # the surviving API's read model caught up with Temporal too
    async def read_model_resolved() -> bool:
        listed = await send(cluster, http, 1, "GET", "/incidents?status=resolved&limit=200",
                            OPENER)
        return set(incident_ids) <= {i["id"] for i in listed.json()["items"]}
    await eventually(read_model_resolved, "the read model to show every incident resolved")

    print(f"\nscale-out: {INCIDENTS} incidents x {len(HOLDERS)} decisions; "
          f"opened in {opened_in:.2f}s; worker notify activities before the kill {busy}; "
          f"racing decisions {dict(outcomes)}, retried on the live API {dict(cluster.retried)}; "
          f"all completed {completed_in:.1f}s after the start, "
          f"{time.monotonic() - killed_at:.1f}s after the kill")
