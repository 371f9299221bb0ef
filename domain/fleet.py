"""Leadership figures across incidents over a period: MTTA, MTTR, time to quorum per node,
the slowest roles and people (median and p90 decision latency), escalations per playbook
and incidents over time.

Pure functions over the per-incident figures of `domain.metrics.incident_metrics`, so one
incident's MTTA here is exactly its `time_to_first_ack` from `GET /incidents/{id}/metrics`.
MTTA and MTTR are means over the incidents that have the figure (acknowledged, resolved).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from domain.metrics import IncidentMetrics


@dataclass(frozen=True)
class IncidentFigures:
    """One incident's metrics and the playbook it ran."""

    metrics: IncidentMetrics
    playbook: str
    resolved: bool


class Spread(BaseModel):
    count: int
    median: float | None = Field(description="seconds")
    p90: float | None = Field(description="seconds")


class NodeQuorum(BaseModel):
    node: str
    title: str
    time_to_outcome: Spread = Field(description="opening to outcome, over nodes that ended")
    pending: int


class Latency(BaseModel):
    name: str = Field(description="role id or person id")
    decisions: int
    median: float | None
    p90: float | None


class DayCount(BaseModel):
    day: date
    opened: int
    resolved: int


class FleetReport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "start": "2026-03-01T00:00:00Z", "end": "2026-03-31T00:00:00Z", "incidents": 12,
        "open": 2, "resolved": 10, "mtta": 412.5, "mttr": 15840.0, "acknowledged": 12,
        "nodes": [{"node": "approve-holding", "title": "Approve the holding statement",
                   "time_to_outcome": {"count": 11, "median": 1260.0, "p90": 5400.0},
                   "pending": 1}],
        "slowest_roles": [{"name": "legal", "decisions": 14, "median": 1800.0,
                           "p90": 7200.0}],
        "slowest_people": [{"name": "lena-legal", "decisions": 6, "median": 2400.0,
                            "p90": 9000.0}],
        "escalations_by_playbook": {"viral-complaint": 5, "data-breach-rumour": 2},
        "incidents_over_time": [{"day": "2026-03-06", "opened": 3, "resolved": 1}]}]})

    start: datetime
    end: datetime
    incidents: int
    open: int
    resolved: int
    mtta: float | None = Field(description="mean seconds from opening to first ack")
    mttr: float | None = Field(description="mean seconds from opening to resolution")
    acknowledged: int
    nodes: list[NodeQuorum]
    slowest_roles: list[Latency] = Field(description="by p90 decision latency, slowest first")
    slowest_people: list[Latency]
    escalations_by_playbook: dict[str, int]
    incidents_over_time: list[DayCount]


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * fraction
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Sequence[float]) -> Spread:
    return Spread(count=len(values), median=statistics.median(values) if values else None,
                  p90=percentile(values, 0.9))


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _latencies(groups: dict[str, list[float]], top: int) -> list[Latency]:
    rows = [Latency(name=name, decisions=len(vals), median=statistics.median(vals),
                    p90=percentile(vals, 0.9)) for name, vals in groups.items()]
    rows.sort(key=lambda r: (-(r.p90 or 0.0), r.name))
    return rows[:top]


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def fleet_report(figures: Sequence[IncidentFigures], start: datetime, end: datetime,
                 top: int = 10) -> FleetReport:
    """The figures of every incident opened in [start, end)."""
    chosen = [f for f in figures if start <= f.metrics.opened_at < end]
    metrics = [f.metrics for f in chosen]
    node_times: dict[str, list[float]] = defaultdict(list)
    node_titles: dict[str, str] = {}
    node_pending: dict[str, int] = defaultdict(int)
    roles: dict[str, list[float]] = defaultdict(list)
    people: dict[str, list[float]] = defaultdict(list)
    escalations: dict[str, int] = defaultdict(int)
    for figure in chosen:
        for node in figure.metrics.nodes:
            node_titles.setdefault(node.node, node.title)
            if node.time_to_outcome is None:
                node_pending[node.node] += 1
            else:
                node_times[node.node].append(node.time_to_outcome)
            escalations[figure.playbook] += node.escalations
        escalations.setdefault(figure.playbook, 0)
        for decision in figure.metrics.decisions:
            people[decision.person].append(decision.latency)
            if decision.role:
                roles[decision.role].append(decision.latency)
    days: dict[date, list[int]] = {}
    if chosen:
        first, last = _day(start), _day(min(end, max(m.opened_at for m in metrics)
                                            + timedelta(seconds=1)))
        span = (last - first).days
        if span <= 366:
            days = {first + timedelta(d): [0, 0] for d in range(span + 1)}
    for m in metrics:
        days.setdefault(_day(m.opened_at), [0, 0])[0] += 1
        if m.resolved_at is not None:
            days.setdefault(_day(m.resolved_at), [0, 0])[1] += 1
    return FleetReport(
        start=start, end=end, incidents=len(chosen),
        open=sum(1 for f in chosen if not f.resolved),
        resolved=sum(1 for f in chosen if f.resolved),
        mtta=_mean(m.time_to_first_ack for m in metrics),
        mttr=_mean(m.time_to_resolution for m in metrics),
        acknowledged=sum(1 for m in metrics if m.time_to_first_ack is not None),
        nodes=[NodeQuorum(node=n, title=node_titles[n], time_to_outcome=spread(node_times[n]),
                          pending=node_pending[n]) for n in sorted(node_titles)],
        slowest_roles=_latencies(roles, top), slowest_people=_latencies(people, top),
        escalations_by_playbook=dict(sorted(escalations.items())),
        incidents_over_time=[DayCount(day=d, opened=v[0], resolved=v[1])
                             for d, v in sorted(days.items())])
