"""SSE fan-out: N concurrent subscribers on one incident's `GET /incidents/{id}/events`, and
the time from a decision (`POST /tasks/{id}/decision` sent) until each subscriber has the
`change` event that carries it; and, of that, the fan-out alone: from the moment the
projection writer appended the event (its stream id is Redis' clock) to its arrival.

The stack is real (uvicorn + worker in a thread, `tests.web_stack`; Temporal dev server;
Redis); the subscribers are httpx streams in this process. The target (issue 7): every
subscriber within 1 s. The "bare" column is Redis pub/sub alone: N plain subscribers and
the time from PUBLISH to receipt, i.e. the floor under the SSE path.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.servers import redis_server
from tests.web_stack import WebStack, web_stack


@dataclass(frozen=True)
class Fanout:
    subscribers: int
    seconds: list[float]  # per subscriber, sorted: decision sent -> event received
    fanout: list[float]  # per subscriber, sorted: event appended to the stream -> received
    bare: list[float]

    @staticmethod
    def _q(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    def latency(self, q: float) -> float:
        return self._q(self.seconds, q)

    def fanout_latency(self, q: float) -> float:
        return self._q(self.fanout, q)

    def bare_latency(self, q: float) -> float:
        return self._q(self.bare, q)


async def _subscriber(http: httpx.AsyncClient, path: str, headers: dict[str, str],
                      ready: asyncio.Event, counter: list[int], total: int,
                      arrived: dict[int, tuple[float, float]], index: int) -> None:
    async with http.stream("GET", path, headers=headers) as response:
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:") and event == "ready":
                counter[0] += 1
                if counter[0] == total:
                    ready.set()
            elif line.startswith("data:") and event == "change":
                data = json.loads(line.partition(":")[2])
                if "decision" in data.get("kinds", []):
                    # the stream id is the Redis clock (ms) when the writer appended it
                    arrived[index] = (time.perf_counter(),
                                      time.time() - int(data["id"].split("-")[0]) / 1000)
                    return


async def _sse_round(stack: WebStack, subscribers: int) -> tuple[list[float], list[float]]:
    incident_id = stack.open_incident()
    task = await asyncio.to_thread(stack.wait_tasks, incident_id, 2)
    limits = httpx.Limits(max_connections=subscribers + 10)
    arrived: dict[int, tuple[float, float]] = {}
    ready = asyncio.Event()
    counter = [0]
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, limits=limits) as http:
        workers = [asyncio.create_task(_subscriber(
            http, f"/incidents/{incident_id}/events", stack.auth("cora"), ready, counter,
            subscribers, arrived, n)) for n in range(subscribers)]
        await asyncio.wait_for(ready.wait(), 60)
        sent = time.perf_counter()
        response = await http.post(f"/tasks/{task['abby']['id']}/decision",
                                   headers=stack.auth("abby"), json={"decision": "approve"})
        response.raise_for_status()
        await asyncio.wait_for(asyncio.gather(*workers), 30)
    return (sorted(at - sent for at, _ in arrived.values()),
            sorted(max(0.0, lag) for _, lag in arrived.values()))


async def _bare_round(redis_url: str, subscribers: int) -> list[float]:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(subscribers)]
    pubsubs = [c.pubsub() for c in clients]
    for pubsub in pubsubs:
        await pubsub.subscribe("bench:fanout")
        await pubsub.get_message(timeout=1)
    publisher = aioredis.Redis.from_url(redis_url)

    async def receive(pubsub: aioredis.client.PubSub) -> float:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            if message is not None:
                return time.perf_counter()

    waiting = [asyncio.create_task(receive(p)) for p in pubsubs]
    sent = time.perf_counter()
    await publisher.publish("bench:fanout", "x")
    arrived = await asyncio.gather(*waiting)
    for pubsub, client in zip(pubsubs, clients, strict=True):
        await pubsub.aclose()
        await client.aclose()
    await publisher.aclose()
    return sorted(at - sent for at in arrived)


async def sse_fanout_suite(subscribers: int = 200) -> Fanout:
    path = shutil.which("temporal")
    assert path, "temporal CLI not on PATH (make bench sets PATH)"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=path, data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"])
    try:
        with redis_server() as redis_url:
            workdir = Path(tempfile.mkdtemp(prefix="bench-sse-"))
            target = env.client.service_client.config.target_host
            with web_stack(target, redis_url, workdir) as stack:
                await _sse_round(stack, min(10, subscribers))  # warm-up, not counted
                seconds, fanout = await _sse_round(stack, subscribers)
            bare = await _bare_round(redis_url, subscribers)
            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        await env.shutdown()
    return Fanout(subscribers=subscribers, seconds=seconds, fanout=fanout, bare=bare)
