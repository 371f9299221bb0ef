"""Worker RSS with N open incidents, and what a bounded workflow cache costs in latency.

For each flow (crisis-engine, same-work, floor), on one dev server: a worker in its own
process (`python -m bench.worker_memory --flow NAME ...`, so one flow's freed memory is
never reused by the next), a few warm-up incidents, its RSS (`/proc/PID/status` VmRSS); then
N incidents opened and left waiting for their approvals, and its RSS again. The row shows
the growth per open incident and the extrapolation to 10,000 (base + 10,000 x growth, with
every incident cached). `make bench BENCH_ARGS=--full` opens 10,000 for real.

Then, for crisis-engine only, warm and evicted `decide` round trips side by side: beside
the first worker (every incident cached), a second crisis-engine worker on its own task
queue with `max_cached_workflows` = N / 4 opens N / 2 incidents (at most 50) of its own.
Then sequential decides alternate between the two workers: a vote on the warm worker's
incident, a vote on the small-cache worker's incident, and so on. Each side casts the first
two votes (both leave the node pending) on each of its incidents, all first votes before
any second one: 100 samples per side at N >= 100, so a p99 is not simply the slowest
decide. On the small-cache worker every vote replays first: N / 2 - 1 other incidents were
touched since its incident's last one, more than its cache holds. Alternating puts both
sides under the same machine load (measured one after the other, minutes apart, the ratio
swung from 1.0x to 2.7x between runs on this 2-core machine). That is the trade-off behind
`CRISIS_WORKER_MAX_CACHED_WORKFLOWS`: memory ~ base + cache x per-incident RSS, and a
decide on an evicted incident costs one replay.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.interpreter import (
    BareFlow,
    CrisisFlow,
    Flow,
    Opened,
    SameWorkFlow,
    dev_server_sqlite,
    percentile,
)
from bench.rows import Row
from core.config import Settings
from readmodel.events import EventHub
from worker.payload_walks import skip_unchanging_payload_walks

FULL_SIZE = 10_000
VOTES_PER_SAMPLED_INCIDENT = 2  # both leave the quorum pending: the same work each time
STARTUP_SECONDS = 60.0


def _flows(redis: aioredis.Redis, redis_url: str, http: httpx.AsyncClient,
           hub: EventHub | None = None) -> dict[str, Flow]:
    publish = "http://127.0.0.1:9/publish"  # no incident here gets as far as publishing
    return {"crisis-engine": CrisisFlow(redis, redis_url, http, publish, hub),
            "same-work": SameWorkFlow(redis, http, publish), "bare": BareFlow()}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# ---- the worker process -------------------------------------------------------------------


def _tail(path: str) -> str:
    return Path(path).read_text(errors="replace")[-2000:]


def _mark_ready(path: str) -> None:
    Path(path).write_text("ready")


async def _serve(args: argparse.Namespace) -> None:
    if not Settings().worker_keep_sdk_payload_walks:  # every flow, as `python -m bench`
        skip_unchanging_payload_walks()
    client = await Client.connect(args.address, data_converter=pydantic_data_converter)
    redis = aioredis.Redis.from_url(args.redis_url, decode_responses=True)
    async with httpx.AsyncClient(trust_env=False) as http:
        flow = _flows(redis, args.redis_url, http)[args.flow]
        worker = flow.worker(client, args.task_queue)  # crisis-engine: cache from settings
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with worker:
            _mark_ready(args.ready_file)
            await stop.wait()
    await redis.aclose()


# ---- the bench side -----------------------------------------------------------------------


class _WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @property
    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def _start_worker(flow: str, address: str, redis_url: str, task_queue: str,
                        cache: int | None, tmp: Path) -> _WorkerProcess:
    ready = tmp / f"ready-{uuid.uuid4().hex[:6]}"
    args = [sys.executable, "-m", "bench.worker_memory", "--flow", flow, "--address", address,
            "--redis-url", redis_url, "--task-queue", task_queue, "--ready-file", str(ready)]
    env = {**os.environ, "CRISIS_LOG_LEVEL": "WARNING"}
    if cache is not None:  # read by `worker.main.build_worker` through Settings
        env["CRISIS_WORKER_MAX_CACHED_WORKFLOWS"] = str(cache)
    log = (tmp / f"worker-{flow}.log").open("ab")
    proc = await asyncio.create_subprocess_exec(*args, stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + STARTUP_SECONDS
    while not ready.exists():
        if proc.returncode is not None or time.monotonic() > deadline:
            log.close()
            tail = _tail(log.name)
            raise RuntimeError(f"bench worker for {flow} did not start:\n{tail}")
        await asyncio.sleep(0.1)
    return _WorkerProcess(proc)


async def _open_many(flow: Flow, client: Client, task_queue: str, count: int,
                     concurrency: int = 20) -> list[Opened]:
    gate = asyncio.Semaphore(concurrency)
    run_id = uuid.uuid4().hex[:6]

    async def one(n: int) -> Opened:
        async with gate:
            return await flow.open(client, task_queue, f"mem-{run_id}-{n}")

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def _decides(sides: list[list[Opened]], votes: int = VOTES_PER_SAMPLED_INCIDENT
                   ) -> list[list[float]]:
    """Sequential decide round trips, alternating between the sides (vote 1 on every
    incident, then vote 2 on every one): per side, its latencies in seconds."""
    out: list[list[float]] = [[] for _ in sides]
    for vote in range(votes):
        for n in range(max(len(side) for side in sides)):
            for index, side in enumerate(sides):
                if n < len(side):
                    started = time.perf_counter()
                    await side[n].votes[vote]()
                    out[index].append(time.perf_counter() - started)
    return out


async def _warm_and_evicted(flow: Flow, client: Client, address: str, redis_url: str,
                            tmp: Path, warm: list[Opened], cache: int
                            ) -> tuple[list[float], list[float]]:
    """Decides on `warm` (incidents of the running worker, all cached), alternating with
    decides on as many incidents of a second worker whose cache holds `cache`."""
    queue = f"rss-small-{uuid.uuid4().hex[:6]}"
    small = await _start_worker(flow.name, address, redis_url, queue, cache, tmp)
    try:
        evicted = await _open_many(flow, client, queue, len(warm))
        warm_s, evicted_s = await _decides([warm, evicted])
    finally:
        await small.stop()
    return warm_s, evicted_s


async def memory_rows(flows: list[Flow], count: int) -> list[Row]:
    """Rows for `python -m bench` (the `flows` argument is unused: each flow gets its own
    worker process and Redis state here)."""
    del flows
    from tests.servers import redis_server

    per: dict[str, tuple[float, float]] = {}
    decide: dict[str, list[float]] = {}
    cache = max(1, count // 4)
    sampled = min(50, count // 2)  # incidents per side (warm, evicted)
    with tempfile.TemporaryDirectory(prefix="crisis-rss-") as tmp_name, \
            redis_server() as redis_url:
        tmp = Path(tmp_name)
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        hub = EventHub(redis)  # the decides' read-your-writes, as the API waits for it
        await hub.start()
        async with httpx.AsyncClient(trust_env=False) as http, dev_server_sqlite() as env:
            address = env.client.service_client.config.target_host
            # each flow: its own worker process and task queue on the one server
            for name, flow in _flows(redis, redis_url, http, hub).items():
                queue = f"rss-{uuid.uuid4().hex[:6]}"
                worker = await _start_worker(name, address, redis_url, queue, None, tmp)
                try:
                    await _open_many(flow, env.client, queue, 5)
                    await asyncio.sleep(1)
                    base = worker.rss
                    opened = await _open_many(flow, env.client, queue, count)
                    await asyncio.sleep(2)
                    per[name] = (base, (worker.rss - base) / count)
                    if name == "crisis-engine":  # beside it, a worker with a small cache
                        decide["warm"], decide["cold"] = await _warm_and_evicted(
                            flow, env.client, address, redis_url, tmp, opened[:sampled],
                            cache)
                finally:
                    await worker.stop()
        await hub.stop()
        await redis.aclose()

    def pick(index: int, scale: float = 1.0) -> tuple[float, float | None, float | None]:
        values = [per[n][index] * scale if n in per else None
                  for n in ("crisis-engine", "same-work", "bare")]
        assert values[0] is not None
        return values[0], values[1], values[2]

    def at_full(name: str) -> float | None:
        if name not in per:
            return None
        base, each = per[name]
        return base + FULL_SIZE * each

    full_note = (f"measured with {count} open" if count >= FULL_SIZE else
                 f"extrapolated from {count} open (base + 10,000 x per-incident); "
                 "--full measures it")
    rows = [
        Row("worker RSS before opening (MB, after 5 warm-up incidents)", *pick(0),
            decimals=0, ratio=False),
        Row(f"worker RSS per open incident (KB, {count} open, all cached)", *pick(1, 1024),
            decimals=0),
        Row("worker RSS at 10,000 open incidents, all cached (MB)",
            at_full("crisis-engine") or 0.0, at_full("same-work"), at_full("bare"), decimals=0,
            note=f"target < 1024; {full_note}"),
    ]
    crisis_base, crisis_each = per["crisis-engine"]
    rows.append(Row(f"worker RSS at 10,000 open, max_cached_workflows={cache} (MB)",
                    crisis_base + min(cache, FULL_SIZE) * crisis_each, decimals=0, ratio=False,
                    note="base + cache x per-incident"))
    if decide.get("warm") and decide.get("cold"):
        for q in (0.5, 0.99):
            rows.append(Row(
                f"decide p{int(q * 100)} on an evicted incident (ms, n={len(decide['cold'])}, "
                f"cache {cache}; floor column = warm worker, decides alternating)",
                percentile(decide["cold"], q) * 1000,
                floor=percentile(decide["warm"], q) * 1000, decimals=0,
                note="target p99 <= 1.5x warm" if q == 0.99 else ""))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_memory")
    parser.add_argument("--flow", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--ready-file", required=True)
    from core.logging import configure_logging

    configure_logging("WARNING")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
