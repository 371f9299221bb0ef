"""Operating the real embedded stack: metrics, JSON logs, secrets hygiene, the client CLI.

One `crisis stack run` (Temporal dev server, Valkey, SMTP sink, worker with its metrics
port, API) runs an incident from open to resolved, driven only through `crisis incidents`
and `crisis tasks` with tokens from the environment. Then:

- `GET /metrics` on the API counts the requests by route template and status;
- the worker's metrics port serves the Temporal SDK's metrics and the domain counters
  (incidents opened/resolved, decisions, deliveries, projection lag), which moved;
- every line the worker and the API logged is JSON;
- after the stack stopped, no demo token appears in any file under the data directory
  except `demo-tokens.json`, which only its owner may read.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port
from tests.test_stack import StackProcess

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent
COMMUNICATOR = "cara-comms"


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text exposition."""
    return [(sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(text) for sample in family.samples]


def total(text: str, name: str, **labels: str) -> float:
    return sum(value for sample, got, value in samples(text)
               if sample == name and all(got.get(k) == v for k, v in labels.items()))


class Cli:
    """`crisis` client commands against the stack's API, as a person in a shell runs them."""

    def __init__(self, api: str, tokens: dict[str, str]) -> None:
        self.api = api
        self.tokens = tokens

    def run(self, as_: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CRISIS_API_URL": self.api, "CRISIS_TOKEN": self.tokens[as_]}
        return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    def json(self, as_: str, *args: str) -> Any:
        result = self.run(as_, *args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[StackProcess, int]]:
    ports = {"api": free_port(), "temporal": free_port(), "temporal-ui": free_port(),
             "redis": free_port(), "smtp": free_port(), "worker-metrics": free_port()}
    process = StackProcess(tmp_path / "data", ports)
    try:
        process.wait_ready()
        yield process, ports["worker-metrics"]
    finally:
        if process.proc.poll() is None:
            try:
                process.stop(signal.SIGTERM, timeout=60)
            except subprocess.TimeoutExpired:
                process.proc.kill()


def wait_for(probe: Any, what: str, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_an_incident_run_through_the_cli_moves_the_metrics_and_leaks_no_token(
    stack: tuple[StackProcess, int], tmp_path: Path,
) -> None:
    process, metrics_port = stack
    data_dir = tmp_path / "data"
    worker_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    users = json.loads((data_dir / "demo-tokens.json").read_text())["users"]
    tokens = {u["id"]: u["token"] for u in users}
    cli = Cli(process.api, tokens)

    sdk_before = httpx.get(worker_metrics, timeout=5)
    assert sdk_before.status_code == 200
    assert "temporal_" in sdk_before.text  # the SDK's own metrics, e.g. worker task slots

    opened = cli.json(COMMUNICATOR, "incidents", "open", "--title", "Prank video",
                      "--summary", "A video is spreading fast", "--severity", "high",
                      "--playbook", "viral-complaint")
    incident_id = opened["id"]
    assert opened["created"] is True

    def open_tasks() -> list[dict[str, Any]] | None:
        page = cli.json(COMMUNICATOR, "tasks", "list", "--incident", incident_id,
                        "--state", "open")
        return page["items"] or None
    tasks = wait_for(open_tasks, "the holding statement's tasks")
    legal = next(t for t in tasks if t["role"] == "legal")
    comms = [t for t in tasks if t["role"] == "comms-lead"][:2]
    assert len(comms) == 2, tasks

    # the human table shows the caller's inbox
    inbox = cli.run(legal["assignee"], "tasks", "list")
    assert inbox.returncode == 0 and legal["id"] in inbox.stdout, inbox.stdout + inbox.stderr

    outcomes = []
    for task in [legal, *comms]:
        decided = cli.json(task["assignee"], "tasks", "decide", task["id"], "approve",
                           "--comment", "ok")
        assert decided["task"]["state"] == "approved"
        outcomes.append(decided["node"]["outcome"])
    assert outcomes == ["pending", "pending", "approved"]

    again = cli.run(legal["assignee"], "tasks", "decide", legal["id"], "reject")
    assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr
    assert again.stderr.startswith("crisis: error: POST /tasks/"), again.stderr

    resolved = cli.json(COMMUNICATOR, "incidents", "resolve", incident_id,
                        "--summary", "Video taken down")
    assert resolved["incident"]["status"] == "resolved"
    shown = cli.json(COMMUNICATOR, "incidents", "show", incident_id, "--timeline")
    kinds = [entry["kind"] for entry in shown["timeline"]["entries"]]
    assert kinds[0] == "opened" and "resolved" in kinds and kinds.count("decision") == 3
    listed = cli.run(COMMUNICATOR, "incidents", "list")
    assert incident_id in listed.stdout and "resolved" in listed.stdout

    # the API's metrics: by route template (never the concrete id) and status
    api_metrics = httpx.get(f"{process.api}/metrics", timeout=5).text
    assert total(api_metrics, "crisis_http_requests_total", method="POST",
                 route="/incidents", status="201") >= 1
    assert total(api_metrics, "crisis_http_requests_total", method="POST",
                 route="/tasks/{task_id}/decision", status="200") == 3
    assert total(api_metrics, "crisis_http_requests_total", method="POST",
                 route="/tasks/{task_id}/decision", status="409") >= 1
    assert total(api_metrics, "crisis_http_request_duration_seconds_count", method="GET",
                 route="/tasks") >= 1
    assert incident_id not in api_metrics

    # the worker's: the domain counters moved as the incident ran
    def domain_counted() -> str | None:
        text = httpx.get(worker_metrics, timeout=5).text
        return text if total(text, "crisis_incidents_resolved_total") >= 1 else None
    worker_text = wait_for(domain_counted, "crisis_incidents_resolved_total on the worker")
    assert total(worker_text, "crisis_incidents_opened_total") == 1
    assert total(worker_text, "crisis_decisions_total", decision="approve") == 3
    assert total(worker_text, "crisis_deliveries_total", outcome="delivered") >= 1
    assert any(name == "crisis_projection_lag_seconds" and 0 <= value < 60
               for name, _, value in samples(worker_text))
    # the SDK's own metrics alongside: the activities that ran were measured
    assert any(name.startswith("temporal_activity_execution") and value > 0
               for name, _, value in samples(worker_text)), worker_text[:2000]

    assert process.stop(signal.SIGINT) == 0, process.output

    # every line the worker and the API wrote is JSON (the stack's own "=====" headers apart)
    for name in ("worker", "api"):
        for line in (data_dir / "logs" / f"{name}.log").read_text().splitlines():
            if line.strip() and not line.startswith("===== "):
                assert isinstance(json.loads(line), dict), f"{name}.log: {line}"

    # the tokens went to the terminal and demo-tokens.json only
    assert all(token in process.output for token in tokens.values())
    demo = data_dir / "demo-tokens.json"
    assert demo.stat().st_mode & 0o077 == 0, oct(demo.stat().st_mode)
    leaks = []
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and path != demo:
            content = path.read_bytes()
            leaks += [f"{path.relative_to(data_dir)}: {user}" for user, token in tokens.items()
                      if token.encode() in content]
    assert not leaks, leaks
    # the hashed token file holds sha256 hashes only, and like every key the stack made
    # (signed actors, incident ids) it is the owner's alone; no key is in any log either
    hashes = data_dir / "tokens.json"
    assert set(json.loads(hashes.read_text())["tokens"]) == {
        hashlib.sha256(t.encode()).hexdigest() for t in tokens.values()}
    key_files = [data_dir / "actor.key"] + [p for p in [data_dir / "id-secret"] if p.exists()]
    for path in [hashes, *key_files]:
        assert path.stat().st_mode & 0o077 == 0, f"{path.name}: {oct(path.stat().st_mode)}"
    keys = [path.read_text().strip() for path in key_files]
    logged = [f"{path.name}" for path in (data_dir / "logs").rglob("*") if path.is_file()
              and any(key.encode() in path.read_bytes() for key in keys)]
    assert not logged, f"a secret key appears in {logged}"
