"""The rows of `python -m bench` and the registry of the suites that produce them.

A suite is an async function `(BenchContext) -> list[Row]` registered under a name:

    from bench.rows import BenchContext, Row, suite

    @suite("reads", help="filtered first page at 10,000 incidents")
    async def reads(ctx: BenchContext) -> list[Row]:
        return [Row("reads: first page p99 (ms)", crisis=12.0, floor=6.0, decimals=1)]

and its module is listed in `bench.__main__.SUITE_MODULES` (importing it registers it).
Suites run in registration order; `--only NAME` picks some. `ctx.args` holds the parsed
command line (a suite may add options with `@suite(..., options=add_options)`), `ctx.full`
is `--full`, `ctx.budget` the per-run time budget, and `await ctx.flows()` the shared
crisis-engine / same-work / floor flows of `bench.interpreter` (started on first use).

Each row has the crisis-engine figure and up to two references measured in the same run:
`same_work` (the hand-written `bench.same_work_workflow`, same deliveries, tasks, updates and
projections) and `floor` (the bare flow, `bench.bare_workflow`, or whatever a suite names as
its floor in the measure text). Ratios are crisis-engine / reference.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Row:
    measure: str
    crisis: float
    same_work: float | None = None
    floor: float | None = None
    decimals: int = 1
    ratio: bool = True  # print crisis / same_work and crisis / floor
    note: str = ""  # e.g. "target <= 1.5x floor"


Producer = Callable[["BenchContext"], Awaitable[list[Row]]]
Options = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Suite:
    name: str
    produce: Producer
    help: str
    options: Options | None = None


SUITES: dict[str, Suite] = {}


def suite(name: str, *, help: str, options: Options | None = None
          ) -> Callable[[Producer], Producer]:
    """Register a row producer under `name` (the `--only` choice)."""
    def register(produce: Producer) -> Producer:
        if name in SUITES:
            raise ValueError(f"bench suite {name!r} is registered twice")
        SUITES[name] = Suite(name, produce, help, options)
        return produce
    return register


@dataclass
class BenchContext:
    args: argparse.Namespace
    stack: AsyncExitStack
    _flows: Any = field(default=None)

    @property
    def full(self) -> bool:
        return bool(getattr(self.args, "full", False))

    @property
    def budget(self) -> float:
        budget: float = self.args.budget
        return budget if budget > 0 else math.inf

    async def flows(self) -> Any:
        """[CrisisFlow, SameWorkFlow, BareFlow] of `bench.interpreter`, shared by suites."""
        if self._flows is None:
            from bench.interpreter import flows

            self._flows = await self.stack.enter_async_context(flows())
        return self._flows


def render(rows: list[Row], header: str) -> str:
    width = max([len(row.measure) for row in rows] + [len("measure")])
    head = (f"{'measure':<{width}}  {'crisis-engine':>13}  {'same-work':>10}  {'floor':>9}  "
            f"{'/same':>6}  {'/floor':>6}  note")
    lines = [header, head, "-" * len(head)]

    def cell(value: float | None, decimals: int, size: int) -> str:
        return f"{'-':>{size}}" if value is None else f"{value:>{size}.{decimals}f}"

    def ratio(row: Row, ref: float | None) -> str:
        if not row.ratio or not ref:
            return f"{'':6}"
        return f"{row.crisis / ref:6.2f}"

    for row in rows:
        lines.append(f"{row.measure:<{width}}  {cell(row.crisis, row.decimals, 13)}  "
                     f"{cell(row.same_work, row.decimals, 10)}  "
                     f"{cell(row.floor, row.decimals, 9)}  {ratio(row, row.same_work)}  "
                     f"{ratio(row, row.floor)}  {row.note}".rstrip())
    return "\n".join(lines)
