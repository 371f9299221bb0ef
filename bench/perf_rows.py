"""The row every issue-10 bench module returns (`bench.reads`, `bench.intake_storm`):
measure, value, unit, baseline, value / baseline, target, and whether the target is met."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchRow:
    name: str
    value: float
    unit: str
    baseline: float
    ratio: float
    target: str
    passed: bool


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline else 0.0


def render(rows: list[BenchRow]) -> str:
    width = max([len(r.name) for r in rows] + [len("measure")])
    lines = [f"{'measure':<{width}}  {'value':>9}  {'unit':<4}  {'baseline':>9}  "
             f"{'ratio':>6}  {'target':<8}  result"]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.value:>9.2f}  {r.unit:<4}  {r.baseline:>9.2f}  "
                     f"{r.ratio:>6.2f}  {r.target:<8}  {'pass' if r.passed else 'FAIL'}")
    return "\n".join(lines)
