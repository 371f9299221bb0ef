"""The engine-cost suites of `python -m bench` (issue 10 items 1-2, issue 9's latency):

- `interpreter`: incidents/s on the time-skipping server, and the history of one finished
  incident per flow (events, bytes, workflow tasks, activities);
- `dev-server`: incidents/s on the dev server with SQLite;
- `update-rtt`: sequential `decide` round trips (crisis-engine, same-work) vs a bare update;
- `first-delivery`: `POST /incidents` -> first delivery (log channel, Apprise `json://`
  receiver) vs the floor's start -> first activity (`bench.first_delivery`);
- `rss`: worker RSS with N open incidents, and decide latency with a small workflow cache
  (`bench.worker_memory`);
- `intake-storm`, `sse-fanout`: the intake and live-event suites, as before.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bench.interpreter import (
    Counts,
    HistoryStats,
    RoundTrips,
    Throughput,
    dev_server_suite,
    interpreter_suite,
    round_trip_suite,
)
from bench.rows import BenchContext, Row, suite

THROUGHPUT_TARGET = "target >= 0.8x same-work, >= 0.5x floor"


def _three(values: list[float]) -> tuple[float, float | None, float | None]:
    crisis = values[0]
    same = values[1] if len(values) > 1 else None
    floor = values[2] if len(values) > 2 else None
    return crisis, same, floor


def throughput_rows(results: list[Throughput]) -> list[Row]:
    label = results[0].server

    def row(measure: str, pick: Callable[[Throughput], float], decimals: int = 1,
            ratio: bool = True, note: str = "") -> Row:
        crisis, same, floor = _three([pick(r) for r in results])
        return Row(f"{label}: {measure}", crisis, same, floor, decimals, ratio, note)

    def mean(count: Callable[[Counts], int]) -> Callable[[Throughput], float]:
        return lambda r: r.mean(count)

    rows = [
        row("incidents measured", lambda r: len(r.samples), 0, ratio=False),
        row("incidents/s", lambda r: r.rate, note=THROUGHPUT_TARGET),
        row("per-incident wall p50 (ms)", lambda r: r.latency(0.5) * 1000, 0),
        row("per-incident wall p99 (ms)", lambda r: r.latency(0.99) * 1000, 0),
        row("tasks per incident", mean(lambda c: c.tasks), ratio=False),
        row("notifications per incident", mean(lambda c: c.notifications), ratio=False),
        row("escalations per incident", mean(lambda c: c.escalations), 2, ratio=False),
    ]
    if all(r.virtual_advance is not None for r in results):
        rows.append(row("virtual minutes passed in run",
                        lambda r: r.virtual_advance.total_seconds() / 60  # type: ignore[union-attr]
                        , ratio=False))
    return rows


def history_rows(results: list[Throughput]) -> list[Row]:
    if not all(r.history is not None for r in results):
        return []
    stats: list[HistoryStats] = [r.history for r in results if r.history is not None]

    def row(measure: str, pick: Callable[[HistoryStats], float], decimals: int = 0,
            note: str = "") -> Row:
        crisis, same, floor = _three([float(pick(s)) for s in stats])
        return Row(f"history per incident: {measure}", crisis, same, floor, decimals,
                   note=note)

    return [
        row("events", lambda s: s.events, note="target <= 2x same-work"),
        row("bytes (KB)", lambda s: s.bytes / 1024, 1, note="target <= 2x same-work"),
        row("workflow tasks", lambda s: s.workflow_tasks),
        row("activities", lambda s: s.activity_count),
        row("project activities", lambda s: s.activities.get("project", 0)
            + s.activities.get("bare_project", 0)),
        row("notify activities", lambda s: sum(n for name, n in s.activities.items()
                                               if "notify" in name)),
    ]


@suite("interpreter", help="incidents/s on the time-skipping server, and history per incident")
async def interpreter(ctx: BenchContext) -> list[Row]:
    results = await interpreter_suite(
        await ctx.flows(), incidents=ctx.args.incidents, concurrency=ctx.args.concurrency,
        warmup=ctx.args.warmup, budget=ctx.budget)
    return throughput_rows(results) + history_rows(results)


@suite("dev-server", help="incidents/s on the dev server with SQLite")
async def dev_server(ctx: BenchContext) -> list[Row]:
    return throughput_rows(await dev_server_suite(
        await ctx.flows(), incidents=ctx.args.incidents, concurrency=ctx.args.concurrency,
        warmup=ctx.args.warmup, budget=ctx.budget))


def round_trip_rows(results: list[RoundTrips]) -> list[Row]:
    n = len(results[0].seconds)
    return [Row(f"decide round trip p{int(q * 100)} (ms, n={n}; floor = bare update)",
                *_three([r.latency(q) * 1000 for r in results]),
                note="target p50 <= 1.2x floor" if q == 0.5 else "")
            for q in (0.5, 0.99)]


@suite("update-rtt", help="sequential decide round trips vs a bare update (dev server)")
async def update_rtt(ctx: BenchContext) -> list[Row]:
    return round_trip_rows(await round_trip_suite(
        await ctx.flows(), samples=ctx.args.round_trips, concurrency=ctx.args.concurrency))


def _first_delivery_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--first-delivery-incidents", type=int, default=100,
                        help="incidents per channel for POST -> first delivery (default 100)")


@suite("first-delivery", help="POST /incidents -> first delivery (log, Apprise) vs floor",
       options=_first_delivery_options)
async def first_delivery(ctx: BenchContext) -> list[Row]:
    from bench.first_delivery import first_delivery_rows

    return await first_delivery_rows(ctx.args.first_delivery_incidents)


def _rss_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--open-incidents", type=int, default=None,
                        help="open incidents for the worker RSS row (default 100; "
                             "--full: 10000)")


@suite("rss", help="worker RSS with N open incidents; decide p99 with a small cache",
       options=_rss_options)
async def rss(ctx: BenchContext) -> list[Row]:
    from bench.worker_memory import memory_rows

    count = ctx.args.open_incidents or (10_000 if ctx.full else 100)
    return await memory_rows(await ctx.flows(), count)


@suite("intake-storm", help="POST /reports storms on one dedup_key (see bench.intake_storm)")
async def intake_storm(ctx: BenchContext) -> list[Row]:
    from bench.intake_storm import STORM_BUDGET_SECONDS, storm_suite, storm_table

    # the shipped path; --full adds the per-report path (the floor column) and the prototype
    paths = ("signals", "per-report", "batch-signal") if ctx.full else ("signals",)
    results = await storm_suite(concurrencies=[50, 200], reports=1000, paths=paths,
                                budget=min(ctx.budget * 2, STORM_BUDGET_SECONDS))
    return [Row(measure, crisis, floor=bare if ctx.full else None, decimals=decimals,
                ratio=ratio, note="floor = per-report update path (--full)")
            for measure, crisis, bare, decimals, ratio in storm_table(results)]


@suite("sse-fanout", help="SSE decision -> event latency vs Redis pub/sub")
async def sse_fanout(ctx: BenchContext) -> list[Row]:
    from bench.sse_fanout import sse_fanout_suite

    result = await sse_fanout_suite(subscribers=200)
    n = result.subscribers
    rows = [Row(f"SSE decision->event p{int(q * 100)} (ms, {n} subscribers)",
                result.latency(q) * 1000, floor=result.bare_latency(q) * 1000,
                note="floor = Redis pub/sub") for q in (0.5, 0.99)]
    rows += [Row(f"SSE append->event p{int(q * 100)} (ms, {n} subscribers)",
                 result.fanout_latency(q) * 1000, floor=result.bare_latency(q) * 1000,
                 note="floor = Redis pub/sub") for q in (0.5, 0.99)]
    return rows


@suite("reads", help="first page p99 of every list filter at 10,000 incidents / 50,000 tasks")
async def reads(ctx: BenchContext) -> list[Row]:
    from bench.reads import reads_rows

    rows = await reads_rows(incidents=10_000, tasks_per_incident=5)
    return [Row(r.name if not r.unit or f"({r.unit})" in r.name else f"{r.name} ({r.unit})",
                r.value,
                floor=r.baseline or None, ratio=bool(r.baseline),
                note=(f"target {r.target}: {'met' if r.passed else 'MISSED'}; "
                      "floor = unfiltered first page") if r.target else "")
            for r in rows]
