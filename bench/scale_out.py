"""`python -m bench.scale_out`: the figures behind docs/scaling.md, on this machine.

Starts a Temporal dev server (SQLite on disk) and Valkey, then for each layout (1 worker +
1 API, then 2 workers + 2 APIs) runs the real `crisis worker` / `crisis api` processes and
drives `--incidents` incidents through them: open, 6 approvals each, resolve, with
`--concurrency` incidents in flight. It prints incidents/s, decision latency, the Temporal
history size per incident, the worker's memory per cached incident and the read model's
memory per incident, as one JSON object per layout.

Bounded: a few hundred requests per layout, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
HOLDERS = ("alex", "abby", "dora", "cora", "liam", "adam")
DIRECTORY: dict[str, Any] = {
    "people": [
        {"id": "cora", "name": "Cora", "access": ["communicator"]},
        {"id": "alex", "name": "Alex", "roles": ["legal"], "access": ["approver"]},
        {"id": "abby", "name": "Abby", "roles": ["legal"], "access": ["approver"]},
        {"id": "dora", "name": "Dora", "roles": ["legal"], "access": ["approver"]},
        {"id": "liam", "name": "Liam", "access": ["leader"]},
        {"id": "adam", "name": "Adam", "access": ["admin"]},
    ],
    "roles": [{"id": "legal"}],
}
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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} never answered 200")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, process_group=0)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def drive(urls: list[str], tokens: dict[str, str], incidents: int,
                concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    ids: list[str] = []

    async def call(client: httpx.AsyncClient, n: int, method: str, path: str, as_: str,
                   body: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {tokens[as_]}",
                   "Idempotency-Key": uuid.uuid4().hex}
        return await client.request(method, f"{urls[n % len(urls)]}{path}", json=body,
                                    headers=headers)

    async def one(client: httpx.AsyncClient, n: int) -> None:
        async with gate:
            opened = await call(client, n, "POST", "/incidents", "cora", {
                "title": f"bench {n}", "summary": "load", "severity": "high",
                "playbook": "scale"})
            assert opened.status_code == 201, opened.text
            incident_id = opened.json()["id"]
            ids.append(incident_id)
            while True:
                listed = await call(client, n, "GET",
                                    f"/tasks?incident_id={incident_id}&state=open", "cora")
                tasks = {t["assignee"]: t["id"] for t in listed.json()["items"]}
                if len(tasks) == len(HOLDERS):
                    break
                await asyncio.sleep(0.05)
            for k, holder in enumerate(HOLDERS):
                began = time.perf_counter()
                decided = await call(client, n + k, "POST", f"/tasks/{tasks[holder]}/decision",
                                     holder, {"decision": "approve"})
                latencies.append(time.perf_counter() - began)
                assert decided.status_code == 200, decided.text
            resolved = await call(client, n, "POST", f"/incidents/{incident_id}/resolve",
                                  "cora", {"summary": "done"})
            assert resolved.status_code == 200, resolved.text

    async def reads(client: httpx.AsyncClient, count: int) -> float:
        """GET /incidents/{id} from the read model, `concurrency` at a time: reads/s."""
        read_gate = asyncio.Semaphore(concurrency)

        async def read(n: int) -> None:
            async with read_gate:
                got = await call(client, n, "GET", f"/incidents/{ids[n % len(ids)]}", "cora")
                assert got.status_code == 200, got.text
        began = time.perf_counter()
        await asyncio.gather(*(read(n) for n in range(count)))
        return count / (time.perf_counter() - began)

    async with httpx.AsyncClient(timeout=120) as client:
        began = time.perf_counter()
        await asyncio.gather(*(one(client, n) for n in range(incidents)))
        elapsed = time.perf_counter() - began
        reads_per_s = await reads(client, 300)
    latencies.sort()
    return {"incidents": incidents, "seconds": round(elapsed, 2),
            "incidents_per_s": round(incidents / elapsed, 2),
            "decisions_per_s": round(incidents * len(HOLDERS) / elapsed, 1),
            "decision_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "decision_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
            "reads_per_s": round(reads_per_s, 1),
            "ids": ids}


async def history_events(address: str, incident_id: str) -> int:
    from core.config import Settings
    from core.temporal_client import connect_temporal

    client = await connect_temporal(Settings(temporal_address=address))
    history = await client.get_workflow_handle(incident_id).fetch_history()
    return len(history.events)


def key_bytes(store: redis.Redis, ids: list[str]) -> tuple[int, int]:
    """Mean `MEMORY USAGE` per incident: its read-model keys, and its idempotency records
    (the per-incident share of the global indexes is left out: a few dozen bytes)."""
    read_model = idempotency = 0
    for incident_id in ids:
        for key in store.scan_iter(match=f"*{incident_id}*", count=1000):
            size = int(store.memory_usage(key) or 0)  # type: ignore[arg-type]
            if key.startswith(b"ce:idem:"):
                idempotency += size
            else:
                read_model += size
    return read_model // len(ids), idempotency // len(ids)


def run_layout(workers: int, apis: int, args: argparse.Namespace, base_env: dict[str, str],
               workdir: Path, tokens: dict[str, str], redis_url: str) -> dict[str, Any]:
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    ports = [free_port() for _ in range(apis)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    env = {**base_env, "CRISIS_TASK_QUEUE": queue, "CRISIS_PUBLIC_URL": urls[0],
           "CRISIS_LOG_LEVEL": "WARNING"}
    crisis = [sys.executable, "-m", "cli.main"]
    with ExitStack() as stack:
        procs = [spawn([*crisis, "worker"], env, workdir / f"w{i}.log") for i in range(workers)]
        procs += [spawn([*crisis, "api", "--port", str(p)], env, workdir / f"a{p}.log")
                  for p in ports]
        for proc in procs:
            stack.callback(stop, proc)
        for url in urls:
            wait_http(f"{url}/readyz")
        store = redis.Redis.from_url(redis_url)
        rss_before = sum(rss_kib(p.pid) for p in procs[:workers])
        result = asyncio.run(drive(urls, tokens, args.incidents, args.concurrency))
        rss_after = sum(rss_kib(p.pid) for p in procs[:workers])
        ids = result.pop("ids")
        read_model, idempotency = key_bytes(store, ids)
        events = asyncio.run(history_events(env["CRISIS_TEMPORAL_ADDRESS"], ids[0]))
    return {"workers": workers, "apis": apis, **result,
            "history_events_per_incident": events,
            "worker_rss_kib_per_incident": round((rss_after - rss_before) / args.incidents, 1),
            "read_model_bytes_per_incident": read_model,
            "idempotency_bytes_per_incident": idempotency}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_out")
    parser.add_argument("--incidents", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()

    from cli.users_cmd import issue_tokens
    from core.devstack import find_temporal_cli, redis_server_binary
    from domain.loader import load_directory

    workdir = Path(tempfile.mkdtemp(prefix="crisis-scale-"))
    (workdir / "playbooks").mkdir()
    directory_file = workdir / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(DIRECTORY))
    (workdir / "playbooks" / "scale.yaml").write_text(yaml.safe_dump(PLAYBOOK))
    users = issue_tokens(load_directory(directory_file).definition, workdir / "demo.json",
                         workdir / "tokens.json")
    tokens = {u["id"]: u["token"] for u in users}
    temporal_port, redis_port = free_port(), free_port()
    servers = [
        spawn([find_temporal_cli(), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
               "--port", str(temporal_port), "--db-filename", str(workdir / "t.db"),
               "--log-level", "error"], dict(os.environ), workdir / "temporal.log"),
        spawn([redis_server_binary(), "--port", str(redis_port), "--bind", "127.0.0.1",
               "--save", "", "--dir", str(workdir)], dict(os.environ), workdir / "valkey.log"),
    ]
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    base_env = {**os.environ, "CRISIS_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
                "CRISIS_REDIS_URL": redis_url, "CRISIS_TOKENS_FILE": str(workdir / "tokens.json"),
                "CRISIS_DIRECTORY_FILE": str(directory_file),
                "CRISIS_PLAYBOOKS_DIR": str(workdir / "playbooks"),
                # one communicator opens every incident: measure throughput, not her budget
                "CRISIS_RATE_LIMIT_ENABLED": "false"}
    try:
        time.sleep(3)
        for workers, apis in ((1, 1), (2, 2)):
            print(json.dumps(run_layout(workers, apis, args, base_env, workdir, tokens,
                                        redis_url)), flush=True)
    finally:
        for server in servers:
            stop(server)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
