"""`python -m bench.notify_latency`: time from the notify activity's start to the first
delivery, Apprise (`json://` to a loopback receiver) side by side with the `log` channel.

Both run in one process against one real Redis, alternating run by run, so the two columns
see the same machine load. The Apprise figure is when the receiver *got* the request; the
log figure is when its Redis write returned (the log channel's delivery). The end-to-end
figure from `POST /incidents` adds the API, Temporal and the workflow in front of this.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from activities import IncidentActivities, SmtpSettings
from activities.apprise_channel import AppriseChannel
from domain.effects import NotifyRequest, Recipient
from domain.playbook import Channel
from tests.receivers import HttpReceiver
from tests.servers import free_port, redis_server


def _request(n: int, channels: list[Channel]) -> NotifyRequest:
    return NotifyRequest(
        idempotency_key=f"bench-{n}:{channels[0]}:alice", incident_id=f"bench-{n}",
        step_id="notify", kind="task", channels=channels, subject="[HIGH] Latency",
        message="How long until it arrives?", task_id=f"task-{n}",
        recipient=Recipient(person_id="alice", name="Alice", apprise_tags=["alice"]))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def measure(runs: int) -> dict[str, list[float]]:
    with redis_server() as url, HttpReceiver() as receiver, \
            tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "apprise.txt"
        config.write_text(f"alice=json://127.0.0.1:{receiver.port}/push\n")
        redis = aioredis.Redis.from_url(url, decode_responses=True)
        async with httpx.AsyncClient(trust_env=False) as http:
            acts = IncidentActivities(
                redis, http, SmtpSettings(host="127.0.0.1", port=free_port(), sender="b@x"),
                apprise=AppriseChannel(config), public_url="http://127.0.0.1:8000")
            times: dict[str, list[float]] = {"log": [], "apprise": []}
            for n in range(runs + 3):  # 3 warm-up runs, not counted
                start = time.perf_counter()
                await acts.notify(_request(n, ["log"]))
                log_ms = (time.perf_counter() - start) * 1000
                start = time.perf_counter()
                result = await acts.notify(_request(n, ["apprise"]))
                assert result.delivered == ["apprise"], result
                apprise_ms = (receiver.requests[-1].received_at - start) * 1000
                if n >= 3:
                    times["log"].append(log_ms)
                    times["apprise"].append(apprise_ms)
        await redis.aclose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.notify_latency", description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    times = asyncio.run(measure(args.runs))
    print(f"notify activity start -> first delivery, {args.runs} runs (ms)")
    print(f"{'channel':<10}{'p50':>8}{'p99':>8}{'max':>8}{'mean':>8}")
    for channel, values in times.items():
        print(f"{channel:<10}{_percentile(values, 0.5):>8.1f}{_percentile(values, 0.99):>8.1f}"
              f"{max(values):>8.1f}{statistics.fmean(values):>8.1f}")


if __name__ == "__main__":
    main()
