"""`python -m bench`: run the registered benchmark suites and print one table with ratios.

Every row shows crisis-engine, the same-work baseline (a hand-written workflow doing the
same deliveries, tasks, updates and projections, `bench.same_work_workflow`), the floor
(the bare flow, `bench.bare_workflow`), and crisis-engine / each. For rates a ratio below 1
means crisis-engine is slower; for times and sizes a ratio above 1 means it costs more.
Each row's note ends with the 1-minute load average when its suite finished.

Suites register themselves (`bench.rows.suite`); the modules in `SUITE_MODULES` are imported
to register theirs. `--full` runs the full-size variants (e.g. 10,000 open incidents).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace

from bench.rows import SUITES, BenchContext, Row, render
from core.config import Settings
from core.logging import configure_logging
from worker.payload_walks import skip_unchanging_payload_walks

# Importing a module registers its suites, in this order. Add new bench modules here.
SUITE_MODULES = ("bench.core_suites",)


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def load_suites() -> None:
    for module in SUITE_MODULES:
        importlib.import_module(module)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    load_suites()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--incidents", type=_at_least(1), default=200,
                        help="measured incidents per flow and server (default 200)")
    parser.add_argument("--concurrency", type=_at_least(1), default=20,
                        help="incidents in flight at once (default 20)")
    parser.add_argument("--round-trips", type=_at_least(1), default=60,
                        help="sequential update round trips per flow (default 60)")
    parser.add_argument("--warmup", type=_at_least(0), default=5,
                        help="uncounted incidents before each throughput run (default 5)")
    parser.add_argument("--budget", type=float, default=10.0,
                        help="seconds after which a throughput run starts no more incidents "
                             "(default 10; 0 = no limit), to keep `make bench` under 5 min")
    parser.add_argument("--full", action="store_true",
                        help="full-size variants (10,000 open incidents for worker RSS, ...)")
    parser.add_argument("--only", action="append", choices=list(SUITES),
                        help="run only this suite (repeatable; default: all): " + "; ".join(
                            f"{s.name}: {s.help}" for s in SUITES.values()))
    for registered in SUITES.values():
        if registered.options is not None:
            registered.options(parser)
    return parser.parse_args(argv)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


async def run(args: argparse.Namespace) -> list[Row]:
    chosen = args.only or list(SUITES)
    rows: list[Row] = []
    async with AsyncExitStack() as stack:
        ctx = BenchContext(args=args, stack=stack)
        for name in SUITES:
            if name not in chosen:
                continue
            started = time.perf_counter()
            produced = await SUITES[name].produce(ctx)
            load = f"load {os.getloadavg()[0]:.2f}"
            print(f"bench suite {name}: {time.perf_counter() - started:.0f} s, {load}",
                  file=sys.stderr, flush=True)
            rows += [replace(row, note=f"{row.note}; {load}" if row.note else load)
                     for row in produced]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING")  # the activities log every delivery at INFO
    # every flow's workers, not only crisis-engine's (whose `build_worker` installs it): an
    # SDK-level saving is no interpreter gain, so the ratios leave it out
    if not Settings().worker_keep_sdk_payload_walks:
        skip_unchanging_payload_walks()
    started = time.perf_counter()
    before = load_average()
    rows = asyncio.run(run(args))
    header = (f"crisis-engine vs same-work baseline vs floor: up to {args.incidents} incidents "
              f"per run (budget {args.budget:.0f} s), concurrency {args.concurrency}; "
              f"{os.cpu_count()} CPUs; load average (1/5/15 min) at start {before}")
    print(render(rows, header))
    print(f"total bench time: {time.perf_counter() - started:.0f} s; "
          f"load average at end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
