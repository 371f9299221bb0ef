"""Leadership figures across incidents (`domain.fleet`) and the readable timeline sentences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.web.present import Names, offset, sentence
from domain.directory import Directory
from domain.fleet import IncidentFigures, fleet_report, percentile
from domain.incident import TimelineEntry
from domain.metrics import Counts, DecisionMetrics, IncidentMetrics, NodeMetrics

T0 = datetime(2026, 3, 6, 17, 40, tzinfo=UTC)


def figures(n: int, ack: float | None, fix: float | None,
            latencies: list[tuple[str, str, float]], node_time: float | None,
            escalations: int = 0, playbook: str = "viral") -> IncidentFigures:
    opened = T0 + timedelta(days=n)
    metrics = IncidentMetrics(
        incident_id=f"inc-{n}", as_of=opened + timedelta(days=1), opened_at=opened,
        first_ack_at=None if ack is None else opened + timedelta(seconds=ack),
        time_to_first_ack=ack,
        resolved_at=None if fix is None else opened + timedelta(seconds=fix),
        time_to_resolution=fix,
        nodes=[NodeMetrics(node="approve", title="Approve", policy="any", outcome="approved"
                           if node_time is not None else "pending", opened_at=opened,
                           ended_at=None, time_to_outcome=node_time, escalations=escalations,
                           slowest_person=None, slowest_role=None)],
        decisions=[DecisionMetrics(task_id=f"inc-{n}.approve.{i}", node="approve", person=who,
                                   role=role, decision="approve", decided_at=opened,
                                   latency=secs)
                   for i, (who, role, secs) in enumerate(latencies)],
        slowest_person=None, slowest_role=None,
        counts=Counts(reports=1, status_updates=0, tasks_by_state={}))
    return IncidentFigures(metrics=metrics, playbook=playbook, resolved=fix is not None)


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 0.9) is None
    assert percentile([5.0], 0.9) == 5.0
    tens = [float(v) for v in range(1, 11)]
    assert percentile(tens, 0.9) == pytest.approx(9.1)


def test_fleet_report_means_medians_and_slowest() -> None:
    data = [
        figures(0, 60, 3600, [("lena", "legal", 600), ("cara", "comms", 30)], 600, 2),
        figures(1, 120, None, [("lena", "legal", 1200), ("colin", "comms", 90)], None, 1,
                "breach"),
        figures(2, None, None, [], None),
        figures(40, 5, 10, [("eve", "exec", 9999)], 10),  # outside the period
    ]
    report = fleet_report(data, T0, T0 + timedelta(days=30))
    assert report.incidents == 3 and report.open == 2 and report.resolved == 1
    assert report.mtta == 90  # the two acknowledged incidents only
    assert report.mttr == 3600
    assert report.acknowledged == 2
    assert [r.name for r in report.slowest_roles] == ["legal", "comms"]
    assert report.slowest_roles[0].median == 900 and report.slowest_roles[0].decisions == 2
    assert report.slowest_people[0].name == "lena"
    node = report.nodes[0]
    assert node.time_to_outcome.count == 1 and node.time_to_outcome.median == 600
    assert node.pending == 2
    assert report.escalations_by_playbook == {"breach": 1, "viral": 2}
    assert sum(d.opened for d in report.incidents_over_time) == 3
    assert report.incidents_over_time[0].day == T0.date()


def test_an_empty_period_has_no_figures() -> None:
    report = fleet_report([], T0, T0 + timedelta(days=1))
    assert report.incidents == 0 and report.mtta is None and report.mttr is None


def test_timeline_sentences_use_names() -> None:
    directory = Directory.model_validate({"people": [
        {"id": "vera", "name": "Vera Vasquez"}, {"id": "gabe", "name": "Gabe Counsel"},
        {"id": "leo", "name": "Leo Lee"}]})
    names = Names({p.id: p for p in directory.people})
    entry = TimelineEntry(seq=5, at=T0 + timedelta(minutes=15), kind="escalation",
                          actor="playbook", details={
                              "node": "approve", "tier": 2, "name": None,
                              "notify": ["person:vera"], "add_approvers": ["person:gabe"],
                              "waiting_on": ["leo"]})
    assert offset(entry.at, T0) == "+00:15"
    assert sentence(entry, names) == (
        "Escalated approve to tier 2: Vera Vasquez, Gabe Counsel, waiting on Leo Lee")
    decision = TimelineEntry(seq=6, at=T0, kind="decision", actor="gabe", details={
        "node": "approve", "decision": "reject", "comment": "No", "role": "legal"})
    assert sentence(decision, names) == "Gabe Counsel (as legal) rejected approve: “No”"


def test_form_problems_land_under_their_fields_and_the_rest_under_the_form() -> None:
    from pydantic import ValidationError

    from api.web.pages import form_errors
    from domain.directory import RosterOverride

    with pytest.raises(ValidationError) as caught:
        RosterOverride.model_validate({"start": "2026-12-24T00:00:00Z",
                                       "end": "2026-12-25T00:00:00Z",
                                       "reason": "x" * 300, "member": "not an id"})
    errors = form_errors(caught.value, ("start", "end", "reason"))
    assert "200" in errors["reason"]  # the reason's own limit, next to its field
    assert "member" not in errors and "should match pattern" in errors["form"]
