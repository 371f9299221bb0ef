"""A storm of duplicate reports: `POST /reports` with one `dedup_key` at high concurrency.

A viral post is reported by hundreds of employees at once. For each intake path and each
concurrency, on a fresh stack (dev server with SQLite, Redis, the worker and the API each in
their own process, real HTTP on loopback):

- `reports` requests go to `POST /reports`, all with the same `dedup_key`, from 500 bench
  reporters (one token each, round robin), so a per-user rate limit is not what is measured;
- accepted/s = 2xx answers / wall time of the storm; 5xx and transport errors are counted;
  the longest gap between two answers shows a stall; a storm still running after `budget`
  seconds stops sending (what is in flight may finish) and is reported as stalled;
- afterwards every 2xx receipt is checked against its incident's timeline (the workflow's
  `timeline` query): a receipt whose report is not there is *lost*; the number of distinct
  incidents for the key must be 1; then the incident is resolved, and the resolve round trip
  shows the workflow still answers.

Paths, each on its own fresh servers:
- `signals`: the API and worker as shipped (single-flight per key, one update-with-start for
  the opener, the rest by `add_report` signals confirmed by one `state` query per batch);
- `per-report`: the previous intake (one update-with-start per report,
  `bench.intake_api --path per-report`), for comparison;
- `batch-signal`: the shipped API with a worker whose workflow also has the proposed
  `add_reports(list[Report])` signal (`bench.batch_workflow`): one signal per batch.

`python -m bench --only intake-storm [--storm-reports N] [--storm-concurrency C ...]`, or
alone: `python -m bench.intake_storm [--reports N] [--concurrency C ...] [--baseline]`
(`intake_storm_rows` gives the registry's rows: accepted/s against >= 300/s, 5xx, lost,
incidents for the key, stall, first answer, API CPU per report, resolve after the storm).
Each measured stack is warmed up first by a small storm on another key.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from temporalio.service import RPCError

from bench.interpreter import dev_server_sqlite
from bench.perf_rows import BenchRow, ratio, render
from cli.users_cmd import issue_tokens
from core.actor_signing import actor_keyring, signed_client
from core.config import Settings
from domain.incident import ResolveRequest
from domain.loader import load_directory
from tests.servers import free_port, redis_server
from workflows.incident import IncidentWorkflow

REPORTERS = 500
PATHS = ("signals", "per-report", "batch-signal")
REQUEST_TIMEOUT = 30.0
STORM_BUDGET_SECONDS = 20.0
VERIFY_SECONDS = 30.0
STARTUP_SECONDS = 60.0

STORM_PLAYBOOK: dict[str, Any] = {
    "id": "storm", "name": "Storm intake", "version": 1,
    "defaults": {"channels": ["log"], "respect_working_hours": False},
    "steps": [
        {"id": "tell", "notify": {"to": [{"person": "cora"}],
                                  "message": "{{ incident.title }}"}},
        {"id": "sign-off", "approval": {"title": "Sign off", "content": "{{ incident.title }}",
                                        "approvers": [{"person": "alex"}], "quorum": "any",
                                        "deadline": "4h"}},
        {"id": "done", "resolution": {}},
    ],
}


def bench_directory() -> dict[str, Any]:
    people = [{"id": f"reporter-{n:03d}", "name": f"Reporter {n}", "access": ["reporter"]}
              for n in range(REPORTERS)]
    people += [{"id": "cora", "name": "Cora Communicator", "access": ["communicator"]},
               {"id": "alex", "name": "Alex Approver", "roles": ["legal"],
                "access": ["approver"]}]
    return {"people": people, "roles": [{"id": "legal"}]}


@dataclass
class StormResult:
    path: str
    concurrency: int
    sent: int = 0
    accepted: int = 0
    created: int = 0
    server_errors: int = 0
    client_errors: int = 0
    transport_errors: int = 0
    elapsed: float = 0.0
    longest_gap: float = 0.0
    first_answer: float = 0.0  # seconds from the first request to the first answer
    stalled: bool = False
    incidents: int = 0
    lost: int = 0
    unverified: int = 0
    history_events: int = 0  # of the incident's current run
    continued_as_new: bool = False
    on_timeline: int = 0
    resolve_ms: float | None = None
    api_cpu_ms: float = 0.0  # CPU of the API process during the storm, per accepted report
    worker_cpu_ms: float = 0.0
    first_error: str | None = None
    receipts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed if self.elapsed else 0.0


@asynccontextmanager
async def _process(args: list[str], env: dict[str, str], log: Path
                   ) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*args, env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:]


async def _wait_ready(http: httpx.AsyncClient, proc: asyncio.subprocess.Process,
                      log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the bench API did not start:\n{_tail(log)}")
        await asyncio.sleep(0.2)


class _Connection:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams: the storm's load generator
    must cost far less than the API it measures (httpx spent ~10 ms of CPU per request)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes, token: str) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self._port)
        reader, writer = self._streams
        writer.write((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        try:
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length = next(int(line.split(":", 1)[1]) for line in lines[1:]
                          if line.lower().startswith("content-length:"))
            return status, await reader.readexactly(length)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _storm(port: int, tokens: list[str], *, key: str, reports: int,
                 concurrency: int, budget: float, result: StormResult) -> None:
    started = time.perf_counter()
    last = started
    counter = iter(range(reports))

    async def one(connection: _Connection, n: int) -> None:
        nonlocal last
        body = json.dumps({"summary": f"Report {n}: this post is everywhere",
                           "dedup_key": key, "severity": "high",
                           "source_url": "https://social.example/post/storm"}).encode()
        try:
            status, text = await connection.post("/reports", body, tokens[n % len(tokens)])
        except (OSError, asyncio.IncompleteReadError, TimeoutError, StopIteration,
                ValueError, IndexError):
            result.transport_errors += 1
            return
        finally:
            now = time.perf_counter()
            if not result.first_answer:
                result.first_answer = now - started
            result.longest_gap = max(result.longest_gap, now - last)
            last = now
        if status >= 400:
            result.first_error = result.first_error or f"{status} {text[:300]!r}"
        if status >= 500:
            result.server_errors += 1
        elif status >= 400:
            result.client_errors += 1
        else:
            result.accepted += 1
            receipt = json.loads(text)
            result.created += bool(receipt["created"])
            result.receipts.append(receipt)

    async def sender() -> None:
        connection = _Connection(port)
        try:
            for n in counter:
                if time.perf_counter() - started > budget:
                    result.stalled = True
                    return
                result.sent += 1
                await one(connection, n)
        finally:
            connection.close()

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started


async def _verify(client: Any, result: StormResult) -> None:
    by_incident: dict[str, set[str]] = {}
    for receipt in result.receipts:
        by_incident.setdefault(receipt["incident_id"], set()).add(receipt["report_id"])
    result.incidents = len(by_incident)
    for incident_id, report_ids in by_incident.items():
        handle = client.get_workflow_handle_for(IncidentWorkflow.run, incident_id)
        try:  # a stalled workflow answers no query: its receipts stay unverified
            entries = await handle.query(IncidentWorkflow.timeline,
                                         rpc_timeout=timedelta(seconds=VERIFY_SECONDS))
        except RPCError:
            result.unverified += len(report_ids)
            continue
        on_timeline = {e.details.get("report_id") for e in entries
                       if e.kind in ("opened", "report_added")}
        result.on_timeline += len(report_ids & on_timeline)
        result.lost += len(report_ids - on_timeline)
        info = (await handle.describe()).raw_description.workflow_execution_info
        result.history_events += info.history_length
        result.continued_as_new = result.continued_as_new or \
            info.first_run_id != info.execution.run_id
        started = time.perf_counter()
        try:
            await asyncio.wait_for(handle.execute_update(IncidentWorkflow.resolve, ResolveRequest(
                request_id=f"bench-{uuid.uuid4().hex}", actor="cora", summary="storm over")),
                REQUEST_TIMEOUT)
            result.resolve_ms = (time.perf_counter() - started) * 1000
        except Exception:  # a stalled workflow: reported as no resolve time
            result.resolve_ms = None


async def _warm_up(port: int, tokens: list[str], client: Any) -> None:
    """One small storm on its own key, then resolved: the worker has imported the workflow
    and the API has its connections, as in a running deployment; not measured."""
    result = StormResult("warm-up", 5)
    await _storm(port, tokens, key=f"warm-up:{uuid.uuid4().hex}", reports=20, concurrency=5,
                 budget=STORM_BUDGET_SECONDS, result=result)
    await _verify(client, result)


async def run_path(path: str, *, concurrencies: list[int], reports: int,
                   budget: float) -> list[StormResult]:
    """One fresh stack for `path`; one storm (its own dedup key) per concurrency."""
    results = []
    async with AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crisis-storm-")))
        redis_url = stack.enter_context(redis_server())
        env = await stack.enter_async_context(dev_server_sqlite())
        config = tmp / "config"
        playbooks = tmp / "playbooks"
        config.mkdir()
        playbooks.mkdir()
        (config / "directory.yaml").write_text(yaml.safe_dump(bench_directory()))
        (config / "routing.yaml").write_text(yaml.safe_dump(
            {"routes": {s: {"playbook": "storm"} for s in ("low", "medium", "high",
                                                            "critical")}}))
        (playbooks / "storm.yaml").write_text(yaml.safe_dump(STORM_PLAYBOOK))
        users = issue_tokens(load_directory(config / "directory.yaml").definition,
                             tmp / "demo-tokens.json", tmp / "tokens.json")
        tokens = [u["token"] for u in users if u["id"].startswith("reporter-")]
        port = free_port()
        child_env = {
            **os.environ,
            "CRISIS_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "CRISIS_REDIS_URL": redis_url, "CRISIS_TASK_QUEUE": "storm",
            "CRISIS_TOKENS_FILE": str(tmp / "tokens.json"),
            "CRISIS_DIRECTORY_FILE": str(config / "directory.yaml"),
            "CRISIS_PLAYBOOKS_DIR": str(playbooks), "CRISIS_LOG_LEVEL": "WARNING",
            "CRISIS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        }
        worker = ["bench.intake_worker"] if path == "batch-signal" else ["cli.main", "worker"]
        worker_proc = await stack.enter_async_context(_process(
            [sys.executable, "-m", *worker], child_env, tmp / "worker.log"))
        api_log = tmp / "api.log"
        api = await stack.enter_async_context(_process(
            [sys.executable, "-m", "bench.intake_api", "--port", str(port), "--path", path],
            child_env, api_log))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     trust_env=False) as http:
            await _wait_ready(http, api, api_log)
        # resolving goes straight to Temporal: signed with the stack's key, as its API signs
        signed = signed_client(env.client, actor_keyring(Settings(tokens_file=tmp / "tokens.json")))
        await _warm_up(port, tokens, signed)
        for concurrency in concurrencies:
            result = StormResult(path, concurrency)
            cpu_before = cpu_seconds(api.pid), cpu_seconds(worker_proc.pid)
            await _storm(port, tokens, key=f"storm:{uuid.uuid4().hex}", reports=reports,
                         concurrency=concurrency, budget=budget, result=result)
            accepted = max(result.accepted, 1)
            result.api_cpu_ms = (cpu_seconds(api.pid) - cpu_before[0]) * 1000 / accepted
            result.worker_cpu_ms = (cpu_seconds(worker_proc.pid) - cpu_before[1]) * 1000 / accepted
            await _verify(signed, result)
            results.append(result)
            print(f"intake storm: {path} c={concurrency}: {result.accepted} accepted in "
                  f"{result.elapsed:.1f} s ({result.rate:.1f}/s), {result.server_errors} 5xx, "
                  f"{result.lost} lost, {result.unverified} unverified, "
                  f"{result.incidents} incident(s), first answer after "
                  f"{result.first_answer * 1000:.0f} ms, "
                  f"API CPU {result.api_cpu_ms:.2f} ms/report, "
                  f"worker CPU {result.worker_cpu_ms:.2f} ms/report, "
                  f"load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr, flush=True)
    return results


async def storm_suite(*, concurrencies: list[int], reports: int, budget: float,
                      paths: tuple[str, ...] = PATHS) -> list[StormResult]:
    out = []
    for path in paths:
        out += await run_path(path, concurrencies=concurrencies, reports=reports, budget=budget)
    return out


def storm_table(results: list[StormResult]) -> list[tuple[str, float, float, int, bool]]:
    """Rows (measure, new path, per-report path, decimals, ratio?) for `python -m bench`:
    the shipped intake, then the `add_reports` prototype, each against the per-report path."""
    rows: list[tuple[str, float, float, int, bool]] = []
    by = {(r.path, r.concurrency): r for r in results}
    measures: list[tuple[str, Any, int, bool]] = [
        ("reports sent", lambda r: r.sent, 0, False),
        ("accepted/s", lambda r: r.rate, 1, True),
        ("5xx", lambda r: r.server_errors, 0, False),
        ("4xx + transport errors (timeouts)",
         lambda r: r.client_errors + r.transport_errors, 0, False),
        ("lost reports", lambda r: r.lost, 0, False),
        ("receipts not verifiable (workflow stalled)", lambda r: r.unverified, 0, False),
        ("incidents for the key", lambda r: r.incidents, 0, False),
        ("history events of the current run", lambda r: r.history_events, 0, False),
        ("continued as new during the storm", lambda r: int(r.continued_as_new), 0, False),
        ("not finished within the budget", lambda r: int(r.stalled), 0, False),
        ("longest gap between answers (ms)", lambda r: r.longest_gap * 1000, 0, False),
        ("resolve after storm (ms, -1 = failed)",
         lambda r: r.resolve_ms if r.resolve_ms is not None else -1, 0, False),
    ]
    for path, name in (("signals", "shipped"), ("batch-signal", "add_reports prototype")):
        for concurrency in sorted({r.concurrency for r in results}):
            new = by.get((path, concurrency))
            if new is None:
                continue
            old = by.get(("per-report", concurrency)) or StormResult("per-report", concurrency)
            label = f"storm c={concurrency}, {name} vs per-report update"
            rows += [(f"{label}: {measure}", float(pick(new)), float(pick(old)), decimals,
                      ratio) for measure, pick, decimals, ratio in measures]
    return rows


STORM_TARGET_PER_S = 300.0


def storm_rows(results: list[StormResult]) -> list[BenchRow]:
    """Rows for the registry: per concurrency, the shipped intake against the per-report
    update-with-start path (baseline 0 when that path was not run)."""
    by = {(r.path, r.concurrency): r for r in results}
    rows: list[BenchRow] = []
    for concurrency in sorted({r.concurrency for r in results if r.path == "signals"}):
        new = by[("signals", concurrency)]
        old = by.get(("per-report", concurrency)) or StormResult("per-report", concurrency)
        label = f"storm c={concurrency}, {new.sent} reports, one dedup_key"
        rows += [
            BenchRow(f"{label}: accepted/s", new.rate, "/s", old.rate,
                     ratio(new.rate, old.rate), f">= {STORM_TARGET_PER_S:.0f}",
                     new.rate >= STORM_TARGET_PER_S),
            BenchRow(f"{label}: 5xx", new.server_errors, "", old.server_errors, 0.0, "0",
                     new.server_errors == 0),
            BenchRow(f"{label}: lost reports (receipt not on a timeline)", new.lost, "",
                     old.lost, 0.0, "0", new.lost == 0 and new.unverified == 0),
            BenchRow(f"{label}: incidents for the key", new.incidents, "", old.incidents,
                     0.0, "1", new.incidents == 1),
            BenchRow(f"{label}: stalled (not done in {STORM_BUDGET_SECONDS:.0f} s)",
                     int(new.stalled), "", int(old.stalled), 0.0, "0", not new.stalled),
            BenchRow(f"{label}: longest gap between answers", new.longest_gap * 1000, "ms",
                     old.longest_gap * 1000, ratio(new.longest_gap, old.longest_gap), "",
                     True),
            BenchRow(f"{label}: first answer (the opener's update-with-start)",
                     new.first_answer * 1000, "ms", old.first_answer * 1000,
                     ratio(new.first_answer, old.first_answer), "", True),
            BenchRow(f"{label}: API CPU per report", new.api_cpu_ms, "ms", old.api_cpu_ms,
                     ratio(new.api_cpu_ms, old.api_cpu_ms), "", True),
            BenchRow(f"{label}: resolve after the storm (-1 = failed)",
                     new.resolve_ms if new.resolve_ms is not None else -1, "ms",
                     old.resolve_ms if old.resolve_ms is not None else -1, 0.0, "answers",
                     new.resolve_ms is not None),
        ]
    rows.append(BenchRow("storm: load average (1 min) after the run", os.getloadavg()[0], "",
                         0.0, 0.0, "", True))
    return rows


async def intake_storm_rows(*, concurrencies: list[int] | None = None, reports: int = 1000,
                            budget: float = STORM_BUDGET_SECONDS,
                            baseline: bool = False) -> list[BenchRow]:
    """The shipped intake at each concurrency (default 50 and 200); with `baseline`, also
    the per-report path it replaced (which stalls: it costs a budget per concurrency)."""
    paths: tuple[str, ...] = ("signals", "per-report") if baseline else ("signals",)
    return storm_rows(await storm_suite(concurrencies=concurrencies or [50, 200],
                                        reports=reports, budget=budget, paths=paths))


def main(argv: list[str] | None = None) -> int:
    import argparse

    from core.logging import configure_logging

    parser = argparse.ArgumentParser(prog="python -m bench.intake_storm",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, action="append",
                        help="repeatable; default 50 and 200")
    parser.add_argument("--baseline", action="store_true",
                        help="also run the per-report update-with-start path")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    rows = asyncio.run(intake_storm_rows(concurrencies=args.concurrency, reports=args.reports,
                                         baseline=args.baseline))
    print(render(rows))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
