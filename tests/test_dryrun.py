"""Dry runs (BRIEF scenario 6): the real workflow in virtual time, with nothing delivered."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cli.main import main
from core.config import Settings
from domain.incident import DirectorySnapshot
from domain.loader import load_directory, load_playbook, parse_yaml, snapshot_playbook
from domain.validation import PlaybookInvalid
from dryrun.report import DryRunReport, render
from dryrun.runner import DryRunError, run_dry_run
from dryrun.scenario import load_scenario, parse_scenario, parse_start
from tests.clock import DST_WEEK, EVEN_WEEK, ODD_WEEK, PINNED_TODAYS
from tests.receivers import HttpReceiver

ROOT = Path(__file__).resolve().parent.parent
VIRAL = ROOT / "playbooks" / "viral-complaint.yaml"
EXAMPLE = ROOT / "playbooks" / "scenarios" / "legal-silent-exec-rejects.yaml"


@pytest.fixture(scope="module")
def directory() -> DirectorySnapshot:
    return load_directory(Settings().directory_file)


def _entries(report: DryRunReport, kind: str) -> list[tuple[str, dict[str, object]]]:
    return [(report.offset(e.at), e.details) for e in report.timeline if e.kind == kind]


def test_pinned_todays_cover_both_roster_weeks_and_a_dst_change(
        directory: DirectorySnapshot) -> None:
    roster = directory.definition.roster("exec-oncall")
    assert {roster.on_call(EVEN_WEEK), roster.on_call(ODD_WEEK)} == {"eve-exec", "vera-vp"}
    new_york = ZoneInfo("America/New_York")
    monday = DST_WEEK - timedelta(days=DST_WEEK.weekday())
    offsets = {(monday + timedelta(days=d)).astimezone(new_york).utcoffset() for d in range(8)}
    assert len(offsets) == 2


@pytest.mark.parametrize("today", PINNED_TODAYS)
def test_legal_silent_and_an_exec_rejects(capsys: pytest.CaptureFixture[str],
                                          directory: DirectorySnapshot,
                                          today: datetime) -> None:
    """The example scenario through the CLI: legal never answers, so the holding statement
    escalates at 15m and 30m and expires at its 4h deadline; the exec has no task."""
    assert main(["dry-run", str(VIRAL), str(EXAMPLE), "--json",
                 "--today", today.isoformat()]) == 0
    report = DryRunReport.model_validate(json.loads(capsys.readouterr().out))
    # the week decides who the executive on call is; the test asks the roster, not a calendar
    on_call = directory.definition.roster("exec-oncall").on_call(report.origin)

    assert [(at, d["name"]) for at, d in _entries(report, "escalation")] == [
        ("+00:15", "Tier 2 (VP Communications, General Counsel)"),
        ("+00:30", "Executive on call")]
    assert [(at, d["outcome"]) for at, d in _entries(report, "node_outcome")] == [
        ("+04:00", "expired")]
    assert report.view.nodes[0].outcome == "expired"
    assert {t.assignee: t.state for t in report.view.tasks
            if t.role == "comms-lead" and t.round == 2} == {
        "cara-comms": "approved", "colin-comms": "approved"}
    # the draft of 2m opened round 2 on v2; round 1's tasks (on the template) were cancelled
    assert {t.state for t in report.view.tasks if t.round == 1} == {"cancelled"}
    assert {t.draft_version for t in report.view.tasks if t.round == 2} == {2}
    # scheduled posts paused at once; never published (and never resolved: never resumed)
    assert [(report.offset(a.at), a.step_id) for a in report.actions] == [
        ("+00:00", "pause-posts")]
    assert not report.resolved
    # the exec's reject found nothing to decide: reported, not a crash
    notes = [(report.offset(n.at), n.result, n.applied) for n in report.notes]
    assert notes[0][0] == "+00:02" and notes[0][1].startswith("v2 (")
    assert notes[0][1].endswith("by cara-comms")
    assert notes[1:] == [
        ("+00:05", "approved by cara-comms, colin-comms", True),
        ("+00:35", "no open task for role exec at +00:35", False)]
    # what would have gone out: the executive on call heard at 15m (standing in for the
    # VP, who is off hours on a Friday evening) and again at 30m
    escalated = [(report.offset(m.at), m.person_id) for m in report.messages
                 if m.kind == "escalation"]
    assert ("+00:15", "gabe-counsel") in escalated and ("+00:15", on_call) in escalated
    assert [p for at, p in escalated if at == "+00:30"] == [on_call]
    assert {m.step_id for m in report.messages if m.at - report.origin >= timedelta(hours=4)
            and m.kind == "notify"} == {"notify-comms-redraft"}

    text = render(report)
    assert "virtual start Fri" in text and "17:40" in text
    assert report.origin.astimezone(ZoneInfo("America/New_York")).weekday() == 4
    assert report.origin > today
    lines = text.splitlines()
    assert any(line.startswith("+00:15  escalation") for line in lines)
    assert any(line.startswith("+00:30  escalation") for line in lines)
    assert any(line.startswith("+04:00  node_outcome") and "EXPIRED" in line for line in lines)
    assert "+00:35  reject by role exec: no open task for role exec at +00:35" in lines
    assert not any(" action publish-statement:" in line for line in lines)
    assert any(line.startswith("  +00:00  action pause-posts: POST") for line in lines)


async def test_quorum_publishes_in_simulation_only(directory: DirectorySnapshot) -> None:
    """Legal (through a delegate) and two comms leads approve: the publish action is
    recorded, the other tasks are cancelled, and nothing reaches the network."""
    with HttpReceiver() as receiver:
        raw = VIRAL.read_bytes().replace(b"/demo/sink/publish", receiver.url("/publish").encode())
        playbook = snapshot_playbook(raw, directory.definition, "viral-complaint (test copy)")
        scenario = parse_scenario(parse_yaml("""
start: "wed 10:00 America/New_York"
incident: {title: Late delivery, severity: high, source_url: "https://social.example/1"}
events:
  - at: 1m
    status_update: {message: Statement in approval}
  - at: 2m
    delegate: {from: lena-legal, to: vera-vp}
  - at: 5m
    decide: {person: vera-vp, decision: approve}
  - at: 6m
    decide: {role: comms-lead, decision: approve, count: 2}
  - at: 1h
    resolve: {summary: Customer answered}
until: 6h
""", "test"), directory.definition, "test")
        report = await run_dry_run(playbook, directory, scenario, public_url=receiver.url(""),
                                   today=EVEN_WEEK)
        assert receiver.requests == []  # webhooks and the action would all have gone here

    assert [(report.offset(a.at), a.step_id) for a in report.actions] == [
        ("+00:00", "pause-posts"), ("+00:06", "publish-statement"), ("+01:00", "pause-posts")]
    published = report.actions[1]
    assert published.url == receiver.url("/publish")
    # round 1 runs on the playbook's suggested text (draft v1): that is what was published
    assert published.payload["text"].startswith("We've seen the posts about Late")
    assert report.actions[2].payload["command"] == "resume"  # resolved: posts resume
    assert [(at, d["step"]) for at, d in _entries(report, "action_run")] == [
        ("+00:00", "pause-posts"), ("+00:06", "publish-statement")]
    assert [at for at, _ in _entries(report, "posts_resumed")] == ["+01:00"]
    assert _entries(report, "delegation")[0][1]["to"] == "vera-vp"
    assert [(at, d["outcome"]) for at, d in _entries(report, "node_outcome")] == [
        ("+00:06", "approved")]
    assert {at for at, _ in _entries(report, "task_cancelled")} == {"+00:06"}
    assert _entries(report, "status_update")[0][0] == "+00:01"
    assert report.resolved and _entries(report, "resolved")[0][0] == "+01:00"
    assert any("webhook" in m.channels for m in report.messages)
    text = render(report)
    assert f"+00:06  action publish-statement: POST {receiver.url('/publish')}" in text
    assert "+00:02  delegate from lena-legal to vera-vp: task" in text


async def test_a_start_in_the_past_is_refused(directory: DirectorySnapshot) -> None:
    playbook = load_playbook(VIRAL, directory.definition)
    scenario = parse_scenario({"start": "2020-01-06T10:00:00+00:00",
                               "incident": {"title": "x", "severity": "high"}},
                              directory.definition, "test")
    with pytest.raises(DryRunError, match="before the simulation clock"):
        await run_dry_run(playbook, directory, scenario)


def test_scenario_errors_carry_their_path(directory: DirectorySnapshot, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("incident: {title: x, severity: high}\nevents:\n"
                   "  - at: 30m\n    decide: {role: legl, decision: approve}\n"
                   "  - at: 10m\n    resolve: {summary: done, actor: nobody}\n"
                   "until: 20m\nstart: someday\n")
    with pytest.raises(PlaybookInvalid) as caught:
        load_scenario(bad, directory.definition)
    assert [str(i) for i in caught.value.issues] == [
        "start: 'someday' is neither an ISO time nor a form such as "
        "'fri 17:40 America/New_York'",
        "events[0].at: after `until` (20m): it would never run",
        "events[0].decide.role: unknown role 'legl' (did you mean 'legal'?)",
        "events[1].at: events must be in time order: 10m is before the previous event at 30m",
        "events[1].resolve.actor: unknown person 'nobody'",
    ]
    bad.write_text("incident: {title: x, severity: high}\nevents:\n"
                   "  - at: 5m\n    decide: {rol: legal, decision: maybe}\n")
    assert main(["dry-run", str(VIRAL), str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert f"{bad}: events[0].decide.rol: unknown key" in err
    assert any(line.startswith(f"{bad}: events[0].decide.decision: ") for line in err)


def test_relative_start_is_the_next_such_local_time() -> None:
    sunday = datetime(2026, 11, 22, 0, 47, tzinfo=UTC)
    start = parse_start("fri 17:40 America/New_York", sunday)
    assert start.isoformat() == "2026-11-27T17:40:00-05:00"
    assert parse_start("Sun 00:00", sunday).date().isoformat() == "2026-11-29"


DRY_RUN_REPEATS = 8  # `make soak` runs 100


def test_the_dry_run_cli_exits_cleanly_run_after_run() -> None:
    """A complete report and exit 0, every time: the Temporal core's native objects used to
    be freed while Python finalized, aborting 3 runs in 8 with PyGILState_Release."""
    crisis = shutil.which("crisis")
    assert crisis, "crisis not on PATH: install the project"
    command = [crisis, "dry-run", str(EXAMPLE), "--today", EVEN_WEEK.isoformat()]
    for attempt in range(DRY_RUN_REPEATS):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, (attempt, done.returncode, done.stderr[-2000:])
        assert "virtual start Fri 2090-02-24 17:40" in done.stdout
        assert "Fatal Python error" not in done.stderr


async def test_a_scenario_can_mark_someone_away(directory: DirectorySnapshot) -> None:
    """The General Counsel goes away at 10m: the 15m escalation that names him reaches the
    legal on-call stand-in instead, through the same overlay the API sets; he is back at
    1h10 and the next firing would reach him again."""
    playbook = load_playbook(VIRAL, directory.definition)
    scenario = parse_scenario(parse_yaml("""
start: "wed 10:00 America/New_York"
incident: {title: Late delivery, severity: high}
events:
  - at: 10m
    away: {person: gabe-counsel, for: 1h, reason: flight}
until: 20m
""", "test"), directory.definition, "test")
    report = await run_dry_run(playbook, directory, scenario, today=EVEN_WEEK)
    note = report.notes[0]
    assert (report.offset(note.at), note.event, note.applied) == ("+00:10", "gabe-counsel away",
                                                                 True)
    assert note.result.startswith("away until ")
    applied = _entries(report, "time_off_applied")
    assert [at for at, _ in applied] == ["+00:10"]
    escalated = {m.person_id for m in report.messages if m.kind == "escalation"}
    assert "gabe-counsel" not in escalated and "olga-oncall" in escalated
    assert "vera-vp" in escalated  # in hours, not away
    bad = {"incident": {"title": "x", "severity": "high"},
           "events": [{"at": "1m", "away": {"person": "gabe"}}]}
    with pytest.raises(PlaybookInvalid, match="unknown person 'gabe'"):
        parse_scenario(bad, directory.definition, "test")


async def test_the_shipped_library_statement_needs_one_comms_lead(
        directory: DirectorySnapshot) -> None:
    """viral-complaint v2: a communicator picks the pre-approved "aware-looking" statement;
    one comms lead's approval publishes it (legal approved the wording in advance)."""
    playbook = load_playbook(VIRAL, directory.definition)
    drafts = playbook.definition.step("holding-statement").approval.drafts  # type: ignore[union-attr]
    assert drafts is not None
    statement = drafts.statement("aware-looking")
    assert statement is not None
    scenario = parse_scenario({
        "start": "wed 10:00 America/New_York",
        "incident": {"title": "Late delivery", "severity": "high"},
        "events": [
            {"at": "1m", "draft": {"node": "holding-statement", "by": "cara-comms",
                                   "text": statement.text + " ", "library": "aware-looking"}},
            {"at": "2m", "draft": {"node": "holding-statement", "by": "cara-comms",
                                   "text": statement.text, "library": "aware-looking"}},
            {"at": "3m", "decide": {"role": "comms-lead", "decision": "approve"}}],
        "until": "10m"}, directory.definition, "test")
    report = await run_dry_run(playbook, directory, scenario, today=EVEN_WEEK)
    edited, used, decided = report.notes
    assert not edited.applied and "byte-identical" in edited.result  # one space too many
    assert used.applied and used.result.endswith("library statement aware-looking@v1")
    assert decided.applied
    assert report.view.nodes[0].outcome == "approved"
    published = [a for a in report.actions if a.step_id == "publish-statement"]
    assert [a.payload["text"] for a in published] == [statement.text]
