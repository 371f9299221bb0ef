"""Decision-latency metrics and the post-incident report, on hand-built views and timelines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from domain.incident import (
    Incident,
    IncidentStatus,
    IncidentView,
    NodeState,
    PlaybookRef,
    Task,
    TaskState,
    TimelineEntry,
)
from domain.metrics import duration, incident_metrics, render_report
from domain.playbook import Severity
from domain.quorum import Outcome

T0 = datetime(2026, 3, 6, 17, 40, tzinfo=UTC)
INC = "inc-0123456789abcdef0123-0"
NODE = "holding"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def task(n: int, assignee: str, role: str | None, created: float,
         state: TaskState = TaskState.open, node: str = NODE) -> Task:
    return Task(id=f"{INC}.{node}.{n}", incident_id=INC, node_id=node, title="Approve",
                content="...", assignee=assignee, role=role, state=state, created_at=at(created))


class Story:
    """Builds a timeline entry by entry, with consecutive sequence numbers."""

    def __init__(self) -> None:
        self.entries: list[TimelineEntry] = []

    def add(self, minutes: float, kind: Any, actor: str, **details: Any) -> Story:
        self.entries.append(TimelineEntry(seq=len(self.entries) + 1, at=at(minutes), kind=kind,
                                          actor=actor, details=details))
        return self

    def decide(self, minutes: float, t: Task, decision: str = "approve") -> Story:
        return self.add(minutes, "decision", t.assignee, task_id=t.id, node=t.node_id,
                        decision=decision, role=t.role)


def incident(**fields: Any) -> Incident:
    return Incident(id=INC, title="Holiday ad | backlash", summary="40k shares",
                    severity=Severity.high, opened_by="cara", opened_at=T0,
                    playbook=PlaybookRef(id="viral-complaint", version=3,
                                         sha256="9f86d081884c7d659a2feaa0c55ad015"),
                    **fields)


def scenario() -> tuple[IncidentView, Story]:
    """Legal (lena) never answers; two comms leads approve after 12 and 50 minutes."""
    lena = task(1, "lena", "legal", 1)
    cara = task(2, "cara", "comms-lead", 1, TaskState.approved)
    colin = task(3, "colin", "comms-lead", 1, TaskState.approved)
    node = NodeState(step_id=NODE, title="Holding statement", policy="1 of legal AND 2 of comms",
                     opened_at=at(1))
    story = (Story().add(0, "opened", "cara", title="Holiday ad")
             .add(1, "task_created", "playbook", task_id=lena.id, node=NODE)
             .add(5, "report_added", "ray", report_id="r2")
             .decide(13, cara)
             .add(16, "escalation", "playbook", node=NODE, tier=1)
             .add(31, "escalation", "playbook", node=NODE, tier=2)
             .add(40, "status_update", "cara", message="Working on it")
             .decide(51, colin))
    view = IncidentView(incident=incident(reports=2), tasks=[lena, cara, colin], nodes=[node])
    return view, story


def test_decision_latency_is_decision_time_minus_task_creation() -> None:
    view, story = scenario()
    metrics = incident_metrics(view, story.entries, as_of=at(60))
    assert [(d.person, d.role, d.node, d.decision, d.latency) for d in metrics.decisions] == [
        ("cara", "comms-lead", NODE, "approve", 12 * 60.0),
        ("colin", "comms-lead", NODE, "approve", 50 * 60.0)]
    assert metrics.time_to_first_ack == 13 * 60.0  # the first decision, before any status update
    assert metrics.first_ack_at == at(13)


def test_an_approver_who_never_answered_is_the_slowest_of_all() -> None:
    view, story = scenario()
    metrics = incident_metrics(view, story.entries, as_of=at(10))  # lena's task is only 9m old
    for slowest in (metrics.slowest_person, metrics.nodes[0].slowest_person):
        assert slowest is not None
        assert (slowest.name, slowest.pending, slowest.answered) == ("lena", True, False)
        assert slowest.seconds == 9 * 60.0  # her age at as_of, shorter than colin's 50m
    assert metrics.slowest_role is not None
    assert (metrics.slowest_role.name, metrics.slowest_role.pending) == ("legal", True)


def test_when_everyone_answered_the_longest_latency_is_slowest() -> None:
    view, story = scenario()
    lena = view.tasks[0].model_copy(update={"state": TaskState.rejected})
    view = view.model_copy(update={"tasks": [lena, *view.tasks[1:]]})
    story.decide(21, lena, "reject")  # 20 minutes: faster than colin's 50
    metrics = incident_metrics(view, story.entries, as_of=at(60))
    assert metrics.slowest_person is not None and metrics.slowest_role is not None
    assert (metrics.slowest_person.name, metrics.slowest_person.seconds) == ("colin", 3000.0)
    assert (metrics.slowest_role.name, metrics.slowest_role.pending) == ("comms-lead", False)
    assert metrics.counts.tasks_by_state["rejected"] == 1


def test_open_incident_has_nulls_and_pending_node() -> None:
    view, story = scenario()
    metrics = incident_metrics(view, story.entries, as_of=at(60))
    assert metrics.time_to_resolution is None and metrics.resolved_at is None
    node = metrics.nodes[0]
    assert (node.outcome, node.time_to_outcome, node.ended_at) == ("pending", None, None)
    assert node.escalations == 2
    assert metrics.counts.reports == 2
    assert metrics.counts.status_updates == 1
    assert metrics.counts.tasks_by_state == {"open": 1, "approved": 2, "rejected": 0,
                                             "delegated": 0, "cancelled": 0, "expired": 0}


def test_nothing_happened_yet_means_no_acknowledgement_and_no_slowest() -> None:
    view = IncidentView(incident=incident(), tasks=[], nodes=[])
    metrics = incident_metrics(view, Story().add(0, "opened", "cara").entries, as_of=at(5))
    assert metrics.time_to_first_ack is None
    assert metrics.slowest_person is None and metrics.slowest_role is None
    assert metrics.decisions == [] and metrics.nodes == []


def test_resolved_incident_times_quorum_and_resolution() -> None:
    view, story = scenario()
    lena = view.tasks[0].model_copy(update={"state": TaskState.approved})
    node = view.nodes[0].model_copy(update={"outcome": Outcome.approved, "ended_at": at(51)})
    resolved = incident(reports=2, status=IncidentStatus.resolved, resolved_at=at(90),
                        resolved_by="cara", resolution_summary="Apology posted")
    view = IncidentView(incident=resolved, tasks=[lena, *view.tasks[1:]], nodes=[node])
    story.decide(3, lena).add(51, "node_outcome", "system", node=NODE, outcome="approved")
    story.add(90, "resolved", "cara", summary="Apology posted")
    metrics = incident_metrics(view, story.entries, as_of=at(500))
    assert metrics.time_to_resolution == 90 * 60.0
    assert metrics.nodes[0].time_to_outcome == 50 * 60.0
    assert metrics.slowest_person is not None
    assert (metrics.slowest_person.name, metrics.slowest_person.pending) == ("colin", False)


def test_expired_task_is_unanswered_until_its_node_ended() -> None:
    lena = task(1, "lena", "legal", 0, TaskState.expired)
    cara = task(2, "cara", "comms-lead", 0, TaskState.approved)
    node = NodeState(step_id=NODE, title="Holding", policy="all", opened_at=at(0),
                     outcome=Outcome.expired, ended_at=at(30))
    view = IncidentView(incident=incident(), tasks=[lena, cara], nodes=[node])
    metrics = incident_metrics(view, Story().decide(45, cara).entries, as_of=at(600))
    assert metrics.slowest_person is not None
    assert metrics.slowest_person.name == "lena"
    assert (metrics.slowest_person.seconds, metrics.slowest_person.answered) == (1800.0, False)
    assert not metrics.slowest_person.pending


def test_report_has_the_summary_the_nodes_and_the_whole_timeline() -> None:
    view, story = scenario()
    metrics = incident_metrics(view, story.entries, as_of=at(60))
    report = render_report(view, story.entries, metrics)
    assert report.startswith("# Post-incident report: Holiday ad \\| backlash\n")
    assert "**Severity:** high" in report
    assert "`viral-complaint` version 3 (sha256 `9f86d081884c`)" in report
    assert "| first acknowledgement | 2026-03-06T17:53:00+00:00 | 13m 00s |" in report
    assert "- **Person:** lena: 59m 00s (still open" in report
    assert "| Holding statement (`holding`) |" in report
    timeline = report.split("## Timeline")[1].strip().splitlines()
    assert len(timeline) == 2 + len(story.entries)  # header, rule, one row per entry
    assert timeline[-1].startswith(f"| 8 | 2026-03-06T18:31:00+00:00 | decision | colin | "
                                   f"task_id={INC}.{NODE}.3;")


def test_duration_formats() -> None:
    assert [duration(s) for s in (None, 12, 250, 10925)] == ["—", "12s", "4m 10s", "3h 02m 05s"]
