"""`crisis playbook validate | schema | graph`, run through the real command line entry."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.main import main
from core.config import ROOT, get_settings
from domain.graph import escape, mermaid
from domain.playbook import STEP_KINDS, Playbook

PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yaml"))
SHIPPED_VERSIONS = {"viral-complaint": "2"}  # a version per change (old incidents keep theirs)
DIRECTORY = ROOT / "config" / "directory.yaml"
INVALID = Path(__file__).parent / "fixtures" / "playbooks" / "invalid"
OK_LINE = re.compile(r"^OK (?P<file>\S+) \((?P<id>[a-z0-9-]+) v(?P<version>\d+), "
                     r"sha256 (?P<sha>[0-9a-f]{12})\)$")


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, list[str]]:
    code = main([str(arg) for arg in argv])
    return code, capsys.readouterr().out.splitlines()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


# ---- validate -------------------------------------------------------------------------

def test_validate_passes_every_shipped_playbook(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run(capsys, "playbook", "validate", "--directory", DIRECTORY, *PLAYBOOKS)
    assert code == 0
    assert lines[0].startswith(f"OK {DIRECTORY} (directory: ")
    matches = [OK_LINE.match(line) for line in lines[1:]]
    assert all(matches), lines
    assert [(m["file"], m["id"], m["version"]) for m in matches if m] == [
        (str(path), path.stem, SHIPPED_VERSIONS.get(path.stem, "1")) for path in PLAYBOOKS]


def test_validate_defaults_to_the_configured_directory(
        capsys: pytest.CaptureFixture[str], settings_env: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    copy = tmp_path / "people.yaml"
    shutil.copy(DIRECTORY, copy)
    settings_env.setenv("CRISIS_DIRECTORY_FILE", str(copy))
    code, lines = run(capsys, "playbook", "validate", PLAYBOOKS[0])
    assert code == 0
    assert lines[0].startswith(f"OK {copy} (directory: 15 people, 7 roles, 3 rosters, sha256 ")


def test_validate_prints_each_error_with_file_and_path(capsys: pytest.CaptureFixture[str]) -> None:
    bad = INVALID / "impossible-require.yaml"
    code, lines = run(capsys, "playbook", "validate", "--directory", DIRECTORY,
                      PLAYBOOKS[0], bad)
    assert code == 1
    assert OK_LINE.match(lines[1])
    assert lines[2] == (f"{bad}: steps[2].approval.require[0].min: impossible quorum: "
                        "needs 5 of 'comms-lead' but only 4 could vote")


def test_validate_summarises_failures_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["playbook", "validate", "--directory", str(DIRECTORY),
                 str(INVALID / "two-kinds.yaml"), str(INVALID / "yaml-syntax.yaml")])
    captured = capsys.readouterr()
    assert code == 1
    assert "2 of 2 playbook(s) invalid" in captured.err
    assert f"{INVALID / 'yaml-syntax.yaml'}: line 9, column 7: invalid YAML" in captured.out


def test_validate_reports_a_missing_file(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    code, lines = run(capsys, "playbook", "validate", "--directory", DIRECTORY, missing)
    assert code == 1
    assert lines[-1] == f"{missing}: (top): cannot read file: No such file or directory"


def test_validate_refuses_two_files_with_one_id_and_version(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    original = ROOT / "playbooks" / "viral-complaint.yaml"
    edited = tmp_path / "viral-complaint-edited.yaml"
    edited.write_text(original.read_text().replace("within a few hours", "within the hour"))
    code, lines = run(capsys, "playbook", "validate", "--directory", DIRECTORY, original, edited)
    assert code == 1
    assert lines[-1] == (f"{edited}: version: viral-complaint v2 is also defined in {original}: "
                         "bump `version` when you change a playbook")
    bumped = tmp_path / "viral-complaint-v3.yaml"
    bumped.write_text(edited.read_text().replace("\nversion: 2\n", "\nversion: 3\n"))
    code, lines = run(capsys, "playbook", "validate", "--directory", DIRECTORY, original, bumped)
    assert code == 0 and lines[-1].startswith(f"OK {bumped} (viral-complaint v3, sha256 ")


def test_validate_checks_the_directory_first(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    directory = tmp_path / "directory.yaml"
    directory.write_text(DIRECTORY.read_text().replace(
        "timezone: Asia/Singapore", "timezone: Asia/Singapur", 1))
    code = main(["playbook", "validate", "--directory", str(directory), str(PLAYBOOKS[0])])
    captured = capsys.readouterr()
    assert code == 1
    assert re.fullmatch(rf"{re.escape(str(directory))}: people\[\d+\]\.timezone: "
                        r"unknown IANA time zone 'Asia/Singapur'\n", captured.out)
    assert "no playbook was checked" in captured.err


def test_validate_needs_at_least_one_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["playbook", "validate"])
    assert caught.value.code == 2
    assert "FILE" in capsys.readouterr().err


# ---- schema ---------------------------------------------------------------------------

def test_schema_is_json_schema_for_editors(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["playbook", "schema"])
    schema = json.loads(capsys.readouterr().out)
    assert code == 0
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == {"id", "name", "version", "steps"}
    assert schema["additionalProperties"] is False
    step = schema["$defs"]["Step"]["properties"]
    assert set(STEP_KINDS) <= set(step)
    wait = schema["$defs"]["Wait"]["properties"]["duration"]
    assert wait["type"] == "string" and re.fullmatch(wait["pattern"], "1h30m")


# ---- graph ----------------------------------------------------------------------------

def test_graph_of_viral_complaint(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run(capsys, "playbook", "graph", ROOT / "playbooks" / "viral-complaint.yaml")
    text = "\n".join(lines)
    assert code == 0 and lines[0] == "flowchart TD"
    nodes = dict(re.findall(r"^\s+(s\d+)\W+<b>([a-z0-9-]+)</b>", text, re.M))
    by_step = {step: node for node, step in nodes.items()}
    assert set(by_step) == {"pause-posts", "notify-social", "holding-statement",
                            "publish-statement", "notify-comms-redraft", "status-reminder",
                            "resolved"}
    pause, social, holding, publish, redraft, reminder, resolved = (by_step[s] for s in (
        "pause-posts", "notify-social", "holding-statement", "publish-statement",
        "notify-comms-redraft", "status-reminder", "resolved"))
    edges = set(re.findall(r"^\s+(\w+) -->(?:\|\"([^\"]*)\"\|)? (\w+)$", text, re.M))
    assert edges == {
        ("start", "", pause), (pause, "", social), (social, "", reminder),
        (reminder, "", holding),
        (holding, "approved", publish), (holding, "rejected", redraft),
        (publish, "", resolved), (redraft, "", resolved), (resolved, "", "finish"),
    }
    holding_line = next(line for line in lines if line.strip().startswith(f"{holding}{{{{"))
    for fact in ("holding-statement</b> · approval", "quorum: 1 of legal AND 2 of comms-lead",
                 "veto: legal", "deadline 4h", "at 15m: notify person:vera-vp, person:gabe-counsel",
                 "at 30m: notify roster:exec-oncall"):
        assert fact in holding_line
    assert f'{reminder} -.->|"every 2h"| {reminder}' in text


def test_graph_draws_branches_and_parallel_fan_out_and_fan_in(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run(capsys, "playbook", "graph", ROOT / "playbooks" / "data-breach-rumour.yaml")
    text = "\n".join(lines)
    assert code == 0
    node = {step: n for n, step in re.findall(r"^\s+(s\d+)\W+<b>([a-z0-9-]+)</b>", text, re.M)}
    join = re.search(r'^\s+(s\d+)\(\("join"\)\)$', text, re.M)
    assert join is not None
    assert f"{node['mobilise']} --> {node['page-security']}" in text
    assert f"{node['mobilise']} --> {node['legal-track']}" in text
    assert f"{node['page-security']} --> {join[1]}" in text
    assert f"{node['notify-comms-standby']} --> {join[1]}" in text
    assert f"{join[1]} --> {node['severity-triage']}" in text
    assert f'{node["severity-triage"]} -->|"critical"| {node["notify-exec-oncall"]}' in text
    assert f'{node["severity-triage"]} -->|"otherwise"| {node["verification-window"]}' in text
    assert "quorum: any 2 approvals" in text
    assert "at 10m, then every 10m x2: notify roster:legal-oncall" in text


def test_graph_of_an_invalid_file_prints_the_errors(capsys: pytest.CaptureFixture[str]) -> None:
    bad = INVALID / "two-kinds.yaml"
    code, lines = run(capsys, "playbook", "graph", bad)
    assert code == 1
    assert lines == [f"{bad}: steps[0]: a step needs exactly one of notify, approval, wait, "
                     "action, branch, parallel, sequence, reminder, resolution "
                     "(found notify, wait)"]


def test_graph_node_ids_are_safe_and_labels_escaped() -> None:
    playbook = Playbook.model_validate({"id": "end", "name": "Tricky", "version": 1, "steps": [
        {"id": "end", "name": 'Say "hi" <b>now</b> #1 `x` {y}',
         "notify": {"to": [{"role": "social"}],
                    "message": 'He said "no" --> {{ incident.title }}'}},
        {"id": "graph", "branch": {"on": "incident.severity", "cases": {
            'crit"ical': [{"id": "subgraph", "wait": {"duration": "1m"}}]}}},
        {"id": "p", "parallel": {"branches": [[], [{"id": "click", "action": {
            "url": 'http://127.0.0.1/"a"?b=<2>'}}]]}},
    ]})
    text = mermaid(playbook)
    for line in text.splitlines()[1:]:
        leading = re.match(r"\s+([^\s(\[{>-]+)", line)
        assert leading is not None and re.fullmatch(r"s\d+|start|finish", leading[1]), line
        quoted = re.findall(r'"([^"]*)"', line)
        for label in quoted:  # no raw quote, bracket, brace or backtick survives in a label
            assert not set(label) & set('`{}'), line
            assert not re.search(r"<(?!/?(?:b|i|br/)>)", label), line
    assert 'Say #quot;hi#quot; #lt;b#gt;now#lt;/b#gt; #35;1 #96;x#96; #123;y#125;' in text
    assert '-->|"crit#quot;ical"|' in text


def test_escape_handles_entities_in_the_right_order() -> None:
    assert escape('#"') == "#35;#quot;"
    assert escape("a\n  b") == "a b"
