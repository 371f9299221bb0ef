"""Domain counters, counted from what the `project` activity writes.

Every change to an incident reaches the read model as a `ProjectionBatch` whose `timeline`
holds the new entries, so counting those entries counts what happened, once per entry,
without touching the workflow. The counters go through Temporal's metric meter, so the
worker exports them on its Prometheus port (`CRISIS_WORKER_METRICS_PORT`) next to the SDK's
own metrics:

- `crisis_incidents_opened_total`, `crisis_incidents_resolved_total`
- `crisis_decisions_total{decision}`
- `crisis_escalations_fired_total{tier}`
- `crisis_deliveries_total{channel, outcome}`: outcome `delivered`, `skipped` or `failed`
  (a failed notification records no channel: `channel="unknown"`)
- `crisis_projection_lag_seconds`: from the newest entry's time to its projection
- `crisis_timeline_entries_total{kind}`

A batch whose write is retried after it succeeded (the worker died before reporting) is
counted again: the counters are at-least-once, like any activity side effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio import activity
from temporalio.common import MetricCounter, MetricGaugeFloat, MetricMeter

from domain.effects import ProjectionBatch


@dataclass(frozen=True)
class DomainMetrics:
    opened: MetricCounter
    resolved: MetricCounter
    decisions: MetricCounter
    escalations: MetricCounter
    deliveries: MetricCounter
    entries: MetricCounter
    lag: MetricGaugeFloat

    @classmethod
    def on(cls, meter: MetricMeter) -> DomainMetrics:
        return cls(
            opened=meter.create_counter("crisis_incidents_opened_total", "incidents opened"),
            resolved=meter.create_counter("crisis_incidents_resolved_total",
                                          "incidents resolved"),
            decisions=meter.create_counter("crisis_decisions_total",
                                           "approval decisions, by decision"),
            escalations=meter.create_counter("crisis_escalations_fired_total",
                                             "escalation tiers fired, by tier"),
            deliveries=meter.create_counter("crisis_deliveries_total",
                                            "notifications by channel and outcome"),
            entries=meter.create_counter("crisis_timeline_entries_total",
                                         "timeline entries projected, by kind"),
            lag=meter.create_gauge_float("crisis_projection_lag_seconds",
                                         "newest projected entry's age when written", "s"),
        )


_cache: dict[int, tuple[MetricMeter, DomainMetrics]] = {}


def _metrics_for(meter: MetricMeter) -> DomainMetrics:
    cached = _cache.get(id(meter))
    if cached is None or cached[0] is not meter:
        cached = (meter, DomainMetrics.on(meter))
        _cache[id(meter)] = cached
    return cached[1]


def observe_batch(batch: ProjectionBatch, meter: MetricMeter | None = None,
                  now: datetime | None = None) -> None:
    """Count the batch's timeline entries (the activity's meter unless one is given)."""
    if meter is None:
        if not activity.in_activity():
            return
        meter = activity.metric_meter()
    metrics = _metrics_for(meter)
    for entry in batch.timeline:
        details = entry.details
        metrics.entries.add(1, {"kind": entry.kind})
        if entry.kind == "opened":
            metrics.opened.add(1)
        elif entry.kind == "resolved":
            metrics.resolved.add(1)
        elif entry.kind == "decision":
            metrics.decisions.add(1, {"decision": str(details.get("decision", "unknown"))})
        elif entry.kind == "escalation":
            metrics.escalations.add(1, {"tier": str(details.get("tier", "unknown"))})
        elif entry.kind in ("notified", "reminder"):
            for channel in details.get("channels") or []:
                metrics.deliveries.add(1, {"channel": str(channel), "outcome": "delivered"})
            for channel in details.get("skipped") or {}:
                metrics.deliveries.add(1, {"channel": str(channel), "outcome": "skipped"})
        elif entry.kind == "notification_failed":
            metrics.deliveries.add(1, {"channel": "unknown", "outcome": "failed"})
    if batch.timeline:
        newest = max(entry.at for entry in batch.timeline)
        if newest.tzinfo is None:
            newest = newest.replace(tzinfo=UTC)
        lag = ((now or datetime.now(UTC)) - newest).total_seconds()
        metrics.lag.set(max(0.0, lag))
