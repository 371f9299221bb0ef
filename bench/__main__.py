"""`python -m bench`: run the benchmark suites and print a summary table with ratios.

Every row shows crisis-engine, the bare baseline, and crisis-engine / bare. For incidents/s
a ratio below 1 means crisis-engine is slower; for times a ratio above 1 means it is slower.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.intake_storm import STORM_BUDGET_SECONDS, storm_suite, storm_table
from bench.interpreter import (
    Counts,
    RoundTrips,
    Throughput,
    dev_server_suite,
    flows,
    interpreter_suite,
    round_trip_suite,
)
from bench.sse_fanout import Fanout, sse_fanout_suite
from core.logging import configure_logging

SUITES = ("interpreter", "dev-server", "update-rtt", "intake-storm", "sse-fanout")


@dataclass(frozen=True)
class Row:
    measure: str
    crisis: float
    bare: float
    decimals: int = 1
    ratio: bool = True


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--incidents", type=_at_least(1), default=200,
                        help="measured incidents per flow and server (default 200)")
    parser.add_argument("--concurrency", type=_at_least(1), default=20,
                        help="incidents in flight at once (default 20)")
    parser.add_argument("--round-trips", type=_at_least(1), default=200,
                        help="sequential update round trips per flow (default 200)")
    parser.add_argument("--warmup", type=_at_least(0), default=5,
                        help="uncounted incidents before each throughput run (default 5)")
    parser.add_argument("--budget", type=float, default=25.0,
                        help="seconds after which a throughput run starts no more incidents "
                             "(default 25; 0 = no limit), to keep the bench near 3 minutes")
    parser.add_argument("--storm-reports", type=_at_least(1), default=1000,
                        help="reports per intake storm (default 1000)")
    parser.add_argument("--storm-concurrency", type=_at_least(1), action="append",
                        help="concurrency of an intake storm (repeatable; default 50 and 200)")
    parser.add_argument("--only", action="append", choices=SUITES,
                        help="run only this suite (repeatable; default: all)")
    return parser.parse_args(argv)


def throughput_rows(pair: list[Throughput]) -> list[Row]:
    crisis, bare = pair
    label = crisis.server

    def mean(count: Callable[[Counts], int]) -> tuple[float, float]:
        return crisis.mean(count), bare.mean(count)

    rows = [
        Row(f"{label}: incidents measured", len(crisis.samples), len(bare.samples),
            decimals=0, ratio=False),
        Row(f"{label}: incidents/s", crisis.rate, bare.rate),
        Row(f"{label}: per-incident wall p50 (ms)", crisis.latency(0.5) * 1000,
            bare.latency(0.5) * 1000, decimals=0),
        Row(f"{label}: per-incident wall p99 (ms)", crisis.latency(0.99) * 1000,
            bare.latency(0.99) * 1000, decimals=0),
        Row(f"{label}: tasks per incident", *mean(lambda c: c.tasks), ratio=False),
        Row(f"{label}: notifications per incident", *mean(lambda c: c.notifications)),
        Row(f"{label}: escalations per incident", *mean(lambda c: c.escalations), decimals=2,
            ratio=False),
    ]
    if crisis.virtual_advance is not None and bare.virtual_advance is not None:
        rows.append(Row(f"{label}: virtual minutes passed in run",
                        crisis.virtual_advance.total_seconds() / 60,
                        bare.virtual_advance.total_seconds() / 60, ratio=False))
    return rows


def round_trip_rows(pair: list[RoundTrips]) -> list[Row]:
    crisis, bare = pair
    return [Row(f"update round trip p{int(q * 100)} (ms, n={len(crisis.seconds)})",
                crisis.latency(q) * 1000, bare.latency(q) * 1000)
            for q in (0.5, 0.99)]


def fanout_rows(result: Fanout) -> list[Row]:
    n = result.subscribers
    rows = [Row(f"SSE decision->event p{int(q * 100)} (ms, {n} subscribers; "
                "bare = Redis pub/sub)", result.latency(q) * 1000, result.bare_latency(q) * 1000)
            for q in (0.5, 0.99)]
    rows += [Row(f"SSE append->event p{int(q * 100)} (ms, {n} subscribers; "
                 "bare = Redis pub/sub)", result.fanout_latency(q) * 1000,
                 result.bare_latency(q) * 1000) for q in (0.5, 0.99)]
    return rows


def render(rows: list[Row], args: argparse.Namespace, seconds: float) -> str:
    width = max([len(row.measure) for row in rows] + [len("measure")])
    header = f"{'measure':<{width}}  {'crisis-engine':>13}  {'bare':>9}  {'ratio':>6}"
    lines = [
        f"crisis-engine vs bare baseline: up to {args.incidents} incidents per run "
        f"(budget {args.budget:.0f} s), concurrency {args.concurrency}, "
        "ratio = crisis-engine / bare",
        header, "-" * len(header)]
    for row in rows:
        ratio = f"{row.crisis / row.bare:6.2f}" if row.ratio and row.bare else f"{'':6}"
        lines.append(f"{row.measure:<{width}}  {row.crisis:>13.{row.decimals}f}  "
                     f"{row.bare:>9.{row.decimals}f}  {ratio}")
    lines.append(f"total bench time: {seconds:.0f} s")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[Row]:
    chosen = args.only or list(SUITES)
    budget = args.budget if args.budget > 0 else math.inf
    rows: list[Row] = []
    async with flows() as both:
        if "interpreter" in chosen:
            rows += throughput_rows(await interpreter_suite(
                both, incidents=args.incidents, concurrency=args.concurrency,
                warmup=args.warmup, budget=budget))
        if "dev-server" in chosen:
            rows += throughput_rows(await dev_server_suite(
                both, incidents=args.incidents, concurrency=args.concurrency,
                warmup=args.warmup, budget=budget))
        if "update-rtt" in chosen:
            rows += round_trip_rows(await round_trip_suite(
                both, samples=args.round_trips, concurrency=args.concurrency))
    if "intake-storm" in chosen:
        rows += [Row(*cells) for cells in storm_table(await storm_suite(
            concurrencies=args.storm_concurrency or [50, 200], reports=args.storm_reports,
            budget=min(budget, STORM_BUDGET_SECONDS)))]
    if "sse-fanout" in chosen:
        rows += fanout_rows(await sse_fanout_suite(subscribers=200))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING")  # the activities log every delivery at INFO
    started = time.perf_counter()
    rows = asyncio.run(run(args))
    print(render(rows, args, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
