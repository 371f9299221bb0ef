"""The domain counters (activities/metrics.py), counted from projection batches.

They go through Temporal's metric meter; here the meter of a runtime whose metrics land in a
`MetricBuffer`, so the test reads exactly what the worker's Prometheus port would export.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig

from activities.metrics import observe_batch
from domain.effects import ProjectionBatch
from domain.incident import Incident, PlaybookRef, Severity, TimelineEntry

NOW = datetime(2026, 3, 6, 17, 40, tzinfo=UTC)


def batch(*entries: tuple[str, dict[str, Any]], at: datetime = NOW) -> ProjectionBatch:
    incident = Incident(id="inc-0123456789abcdef0123-1", title="t", summary="s",
                        severity=Severity.high, opened_by="cara", opened_at=at,
                        playbook=PlaybookRef(id="viral-complaint", version=1, sha256="0" * 64))
    return ProjectionBatch(incident=incident, timeline=[
        TimelineEntry(seq=i + 1, at=at, kind=kind, actor="system", details=details)  # type: ignore[arg-type]
        for i, (kind, details) in enumerate(entries)])


def observed(*batches: ProjectionBatch, now: datetime = NOW) -> tuple[Counter[Any], list[float]]:
    buffer = MetricBuffer(10_000)
    meter = Runtime(telemetry=TelemetryConfig(metrics=buffer)).metric_meter
    for one in batches:
        observe_batch(one, meter, now=now)
    counts: Counter[Any] = Counter()
    lags = []
    for update in buffer.retrieve_updates():
        labels = tuple(sorted((k, v) for k, v in update.attributes.items()
                              if k != "service_name"))
        if update.metric.name == "crisis_projection_lag_seconds":
            lags.append(float(update.value))
        else:
            counts[(update.metric.name, labels)] += update.value
    return counts, lags


def test_a_whole_incident_is_counted_once_per_entry() -> None:
    counts, lags = observed(
        batch(("opened", {}), ("notified", {"channels": ["log", "webhook"],
                                            "skipped": {"email": "no address"}})),
        batch(("task_created", {}), ("escalation", {"tier": 1, "name": "Tier 2"}),
              ("escalation", {"tier": 2}), ("escalation", {"tier": 1})),
        batch(("decision", {"decision": "approve"}), ("decision", {"decision": "reject"}),
              ("decision", {"decision": "approve"})),
        batch(("notification_failed", {"error": "SMTP refused"}), ("reminder",
                                                                   {"channels": ["log"]})),
        batch(("resolved", {"summary": "done"}), at=NOW - timedelta(seconds=3)),
        now=NOW,
    )
    assert counts[("crisis_incidents_opened_total", ())] == 1
    assert counts[("crisis_incidents_resolved_total", ())] == 1
    assert counts[("crisis_decisions_total", (("decision", "approve"),))] == 2
    assert counts[("crisis_decisions_total", (("decision", "reject"),))] == 1
    assert counts[("crisis_escalations_fired_total", (("tier", "1"),))] == 2
    assert counts[("crisis_escalations_fired_total", (("tier", "2"),))] == 1
    deliveries = {labels: n for (name, labels), n in counts.items()
                  if name == "crisis_deliveries_total"}
    assert deliveries == {
        (("channel", "log"), ("outcome", "delivered")): 2,  # the notification and the reminder
        (("channel", "webhook"), ("outcome", "delivered")): 1,
        (("channel", "email"), ("outcome", "skipped")): 1,
        (("channel", "unknown"), ("outcome", "failed")): 1,
    }
    assert counts[("crisis_timeline_entries_total", (("kind", "escalation"),))] == 3
    assert lags[-1] == 3.0  # the resolved entry was projected 3 s after it happened
    assert all(lag >= 0 for lag in lags)


def test_an_empty_batch_counts_nothing() -> None:
    counts, lags = observed(batch())
    assert sum(counts.values()) == 0 and lags == []


def test_outside_an_activity_without_a_meter_it_does_nothing() -> None:
    observe_batch(batch(("opened", {})))  # no activity context: no meter, no error
