"""Playbook validation as an admin meets it: the shipped playbooks pass, and each kind of
mistake is reported at its exact path with a message that says what to fix."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from core.config import ROOT
from core.payloads import DATA_CONVERTER
from domain.directory import Directory
from domain.incident import PlaybookSnapshot
from domain.loader import load_directory, load_playbook, parse_yaml, sha256, snapshot_playbook
from domain.playbook import QuorumK
from domain.validation import PlaybookInvalid, PlaybookIssue, validate_playbook

PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yaml"))
INVALID = Path(__file__).parent / "fixtures" / "playbooks" / "invalid"


@pytest.fixture(scope="module")
def demo() -> Directory:
    return load_directory(ROOT / "config" / "directory.yaml").definition


def issues_of(path: Path, directory: Directory) -> list[PlaybookIssue]:
    with pytest.raises(PlaybookInvalid) as caught:
        load_playbook(path, directory)
    return caught.value.issues


# ---- the shipped playbooks ------------------------------------------------------------

def test_the_three_scenario_playbooks_ship() -> None:
    assert {p.stem for p in PLAYBOOKS} >= {"viral-complaint", "data-breach-rumour",
                                           "product-safety"}


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.stem)
def test_shipped_playbook_is_valid(path: Path, demo: Directory) -> None:
    snapshot = load_playbook(path, demo)
    assert snapshot.id == path.stem
    assert snapshot.sha256 == sha256(path.read_bytes())


def test_shipped_playbooks_use_every_control_step_kind(demo: Directory) -> None:
    kinds = {step.kind for path in PLAYBOOKS for _, step in load_playbook(path, demo)
             .definition.walk()}
    assert {"notify", "approval", "wait", "action", "branch", "parallel", "sequence",
            "reminder", "resolution"} <= kinds


def test_viral_complaint_is_scenario_one(demo: Directory) -> None:
    playbook = load_playbook(ROOT / "playbooks" / "viral-complaint.yaml", demo).definition
    assert [s.id for s in playbook.steps] == [
        "pause-posts", "notify-social", "status-reminder", "holding-statement", "resolved"]
    pause = playbook.step("pause-posts").action
    assert pause is not None and pause.resume_on_resolve is not None
    notify = playbook.step("notify-social").notify
    assert notify is not None and [t.role for t in notify.to] == ["social"]

    approval = playbook.step("holding-statement").approval
    assert approval is not None
    assert [(t.role) for t in approval.approvers] == ["legal", "comms-lead"]
    assert [(r.role, r.min) for r in approval.require or []] == [("legal", 1), ("comms-lead", 2)]
    assert approval.quorum is None and approval.veto == ["legal"]
    assert approval.deadline == timedelta(hours=4)
    tiers = [(t.after, [x.label() for x in t.notify]) for t in approval.escalation]
    assert tiers == [
        (timedelta(minutes=15), ["person:vera-vp", "person:gabe-counsel"]),
        (timedelta(minutes=30), ["roster:exec-oncall"]),
    ]
    publish = approval.on_approved[0]
    assert publish.id == "publish-statement" and publish.action is not None
    assert publish.action.method == "POST"
    assert publish.action.url == "/demo/sink/publish"
    payload = str(publish.action.payload)
    assert "{{ steps.holding-statement.content }}" in payload
    assert "{{ incident.title }}" in payload
    rejected = approval.on_rejected[0].notify
    assert rejected is not None and [t.role for t in rejected.to] == ["comms-lead"]

    reminder = playbook.step("status-reminder").reminder
    assert reminder is not None and reminder.every == timedelta(hours=2)
    assert [t.role for t in reminder.to] == ["social"]
    assert playbook.steps[-1].resolution is not None


def test_data_breach_branches_on_severity_and_needs_two_of_security_and_legal(
        demo: Directory) -> None:
    playbook = load_playbook(ROOT / "playbooks" / "data-breach-rumour.yaml", demo).definition
    triage = playbook.step("severity-triage").branch
    assert triage is not None and triage.on == "incident.severity"
    assert "critical" in triage.cases and triage.default
    approval = playbook.step("breach-statement").approval
    assert approval is not None and approval.quorum == QuorumK(k=2)
    assert {t.role for t in approval.approvers} == {"security", "legal"}
    assert playbook.defaults.respect_working_hours


def test_product_safety_alerts_in_parallel_and_any_exec_decides(demo: Directory) -> None:
    playbook = load_playbook(ROOT / "playbooks" / "product-safety.yaml", demo).definition
    alert = playbook.steps[0].parallel
    assert alert is not None
    assert [[s.notify.to[0].role for s in branch if s.notify] for branch in alert.branches] == [
        ["product-safety"], ["legal"]]
    approval = playbook.step("safety-notice").approval
    assert approval is not None and approval.quorum == "any"
    assert [t.role for t in approval.approvers] == ["exec"]
    assert playbook.step("retailer-grace").wait is not None
    assert playbook.step("publish-safety-notice").action is not None


# ---- every kind of mistake, at its path -----------------------------------------------

EXPECTED: dict[str, tuple[str, str]] = {
    "unknown-key": ("steps[0].notfy", "unknown key"),
    "unknown-person": ("steps[1].approval.approvers[0].person", "unknown person 'zoe-nobody'"),
    "unknown-role": ("steps[0].notify.to[0].role", "unknown role 'marketing'"),
    "unknown-roster": ("steps[1].approval.escalation[0].notify[0].roster",
                       "unknown roster 'ceo-oncall'"),
    "unknown-step-template": ("steps[1].approval.on_approved[0].action.payload",
                              "names unknown step 'holding' (did you mean 'holding-statement'?)"),
    "unknown-step-branch": ("steps[1].branch.on", "names unknown step 'holding-statment'"),
    "duplicate-step-id": ("steps[2].id", "duplicate step id 'notify-social' (first at steps[0])"),
    "impossible-require": ("steps[2].approval.require[0].min",
                           "impossible quorum: needs 5 of 'comms-lead' but only 4 could vote"),
    "impossible-k": ("steps[2].approval.quorum.k",
                     "impossible quorum: k=4 but only 3 people could vote"),
    "bad-duration-words": ("steps[3].wait.duration", "invalid duration '15 minutes'"),
    "negative-duration": ("steps[3].wait.duration", "invalid duration '-5m'"),
    "two-kinds": ("steps[0]", "needs exactly one of notify, approval"),
    "missing-field": ("steps[0].approval.content", "an approval needs `content`"),
    "unknown-channel": ("steps[0].notify.channels[1]",
                        "'log', 'webhook', 'email' or 'apprise'"),
    "tier-after-deadline": ("steps[1].approval.escalation[1].after",
                            "fires after the node's deadline (2h >= deadline 1h)"),
    "tier-after-default-deadline": ("steps[0].approval.escalation[0].after",
                                    "45m >= default approval_deadline 30m"),
    "empty-tier": ("steps[0].approval.escalation[0]", "must notify someone or add approvers"),
    "yaml-syntax": ("line 9, column 7", "invalid YAML: expected ',' or ']'"),
    "duplicate-key": ("line 10, column 7", "duplicate key 'message'"),
    "unknown-placeholder": ("steps[0].notify.message", "unknown placeholder {{incident.titel}}"),
    "template-filter": ("steps[0].notify.message",
                        "unsupported template {{ incident.title | upper }}"),
    "later-step-reference": ("steps[0].notify.message",
                             "names step 'holding-statement', which has no outcome yet"),
    "content-of-notify": ("steps[1].action.payload", "only approval steps have content"),
    "bad-branch-case": ("steps[0].branch.cases.urgent", "incident.severity is never 'urgent'"),
    "bad-quorum-word": ("steps[0].approval.quorum", "quorum is `all`, `any` or `{k: N}`"),
    "quorum-k-zero": ("steps[0].approval.quorum.k", "greater than or equal to 1"),
    "quorum-and-require": ("steps[0].approval", "give exactly one of `quorum`"),
    "target-two-keys": ("steps[0].notify.to[0]", "exactly one of person, role or roster"),
    "unknown-veto-role": ("steps[0].approval.veto[0]", "unknown role 'lawyers'"),
    "tiers-out-of-order": ("steps[0].approval.escalation", "tiers must be in order of `after`"),
    "reminder-after-resolution": ("steps[2].reminder",
                                  "never fires: it comes after the resolution gate 'resolved'"),
    "repeat-without-every": ("steps[0].approval.escalation[0]", "a repeating tier needs `every`"),
    "bad-playbook-id": ("id", "String should match pattern"),
    "not-a-mapping": ("(top)", "a playbook is a mapping"),
}


def test_every_invalid_fixture_has_an_expectation() -> None:
    assert {p.stem for p in INVALID.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_mistake_is_reported_at_its_path(name: str, demo: Directory) -> None:
    path, fragment = EXPECTED[name]
    issues = issues_of(INVALID / f"{name}.yaml", demo)
    assert len(issues) == 1, issues  # one mistake, one message: no noise
    assert issues[0].path == path
    assert fragment in issues[0].message


def test_every_issue_is_reported_at_once(demo: Directory) -> None:
    data = parse_yaml((ROOT / "playbooks" / "viral-complaint.yaml").read_bytes(), "viral")
    broken = copy.deepcopy(data)
    broken["steps"][1]["notify"]["to"] = [{"role": "socail"}]
    approval: dict[str, Any] = broken["steps"][3]["approval"]
    approval["require"][1]["min"] = 7
    approval["escalation"][0]["notify"][0] = {"person": "vera"}
    with pytest.raises(PlaybookInvalid) as caught:
        validate_playbook(broken, demo, "viral")
    assert [(i.path, i.message) for i in caught.value.issues] == [
        ("steps[1].notify.to[0].role", "unknown role 'socail' (did you mean 'social'?)"),
        ("steps[3].approval.escalation[0].notify[0].person",
         "unknown person 'vera' (did you mean 'vera-vp'?)"),
        ("steps[3].approval.require[1].min",
         "impossible quorum: needs 7 of 'comms-lead' but only 4 could vote"),
    ]
    assert str(caught.value).startswith("viral: steps[1].notify.to[0].role: unknown role")


def test_added_approvers_make_a_larger_quorum_possible(demo: Directory) -> None:
    playbook: dict[str, Any] = {"id": "grow", "name": "Grow", "version": 1, "steps": [
        {"id": "review", "approval": {
            "content": "x", "approvers": [{"role": "legal"}], "quorum": {"k": 6},
            "escalation": [{"after": "30m", "add_approvers": [
                {"person": "vera-vp"}, {"roster": "exec-oncall"}]}]}}]}
    with pytest.raises(PlaybookInvalid, match="k=6 but only 5 people could vote"):
        validate_playbook(playbook, demo)  # legal (3) + vera + roster {eve, vera} = 5 people
    playbook["steps"][0]["approval"]["quorum"] = {"k": 5}
    assert validate_playbook(playbook, demo).steps[0].approval is not None


def test_branch_on_an_approval_outcome_accepts_only_outcomes(demo: Directory) -> None:
    data = parse_yaml((ROOT / "playbooks" / "product-safety.yaml").read_bytes(), "ps")
    data["steps"][2]["branch"]["cases"]["timeout"] = []
    with pytest.raises(PlaybookInvalid) as caught:
        validate_playbook(data, demo)
    assert [(i.path, i.message) for i in caught.value.issues] == [(
        "steps[2].branch.cases.timeout",
        "steps.safety-notice.outcome is never 'timeout': use one of approved, rejected, "
        "vetoed, expired")]


def test_an_approval_tier_message_may_show_the_draft_itself(demo: Directory) -> None:
    data: dict[str, Any] = {"id": "self", "name": "Self", "version": 1, "steps": [
        {"id": "review", "approval": {
            "content": "Draft", "approvers": [{"role": "legal"}], "quorum": "any",
            "escalation": [{"after": "15m", "notify": [{"person": "vera-vp"}],
                            "message": "Still open: {{ steps.review.content }}"}]}}]}
    assert validate_playbook(data, demo).id == "self"
    data["steps"][0]["approval"]["content"] = "Result so far: {{ steps.review.outcome }}"
    with pytest.raises(PlaybookInvalid, match="which has no outcome yet when step 'review'"):
        validate_playbook(data, demo)


# ---- YAML as admins write it ----------------------------------------------------------

def test_yaml_on_and_yes_keys_stay_text(demo: Directory) -> None:
    text = b"""
id: yaml-words
name: YAML 1.1 words
version: 1
steps:
  - id: triage
    branch:
      on: incident.severity
      cases:
        critical:
          - id: page
            notify: {to: [{role: exec}], message: "yes: no, on: off"}
"""
    snapshot = snapshot_playbook(text, demo, "inline")
    branch = snapshot.definition.steps[0].branch
    assert branch is not None and branch.on == "incident.severity"


def test_snapshot_hash_proves_the_exact_text(demo: Directory) -> None:
    raw = (ROOT / "playbooks" / "viral-complaint.yaml").read_bytes()
    a = snapshot_playbook(raw, demo, "a")
    b = snapshot_playbook(raw + b"\n# a comment changes the text\n", demo, "b")
    assert (a.id, a.version) == (b.id, b.version) and a.definition == b.definition
    assert a.sha256 != b.sha256


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.stem)
def test_snapshot_survives_the_trip_through_temporal(
        path: Path, demo: Directory) -> None:
    snapshot = load_playbook(path, demo)
    converter = DATA_CONVERTER.payload_converter
    payloads = converter.to_payloads([snapshot])
    assert converter.from_payloads(payloads, [PlaybookSnapshot]) == [snapshot]
    assert PlaybookSnapshot.model_validate(snapshot.model_dump()) == snapshot
    first = snapshot.model_dump(mode="json")["definition"]["steps"][0]
    assert set(first) <= {"id", "name", snapshot.definition.steps[0].kind}  # no `kind: null`


def test_publishes_must_name_an_earlier_approval_that_takes_drafts() -> None:
    from tests.factories import directory, drafts_playbook, viral_playbook

    ok = validate_playbook(drafts_playbook("https://example.org/publish"), directory())
    assert ok.step("publish-statement").action is not None
    data = viral_playbook("https://example.org/publish")
    data["steps"][2]["approval"]["on_approved"][0]["action"]["publishes"] = "holding-statement"
    with pytest.raises(PlaybookInvalid) as caught:
        validate_playbook(data, directory())
    assert [(i.path, i.message.split(":")[0]) for i in caught.value.issues] == [
        ("steps[2].approval.on_approved[0].action.publishes",
         "approval 'holding-statement' takes no drafts")]


def test_the_libyaml_path_reads_every_text_as_the_checked_loader_does() -> None:
    """Big directories parse through libyaml (5x faster: the policy workflows parse the
    active directory inside a 2 s workflow task); every shipped and fixture text, and the
    scalars the project reads the YAML 1.2 way, come out exactly as from the pure-Python
    loader, and refusals keep its limits and its words."""
    import yaml

    from domain import loader

    texts = [p.read_bytes() for p in sorted(ROOT.glob("**/*.yaml"))
             if ".venv" not in p.parts and "node_modules" not in p.parts]
    texts.append(b"a: on\nb: 18:00\nc: yes\nd: 0o17\ne: 012\nf: 1_000\ng: .5\nh: TRUE\n"
                 b"i: ~\nj: 2026-12-07\nk: 1e3\nl: 0x1F\nm: [&x 1, *x]\n")
    assert len(texts) > 20
    for raw in texts:
        try:
            checked = yaml.load(raw, Loader=loader._UniqueKeyLoader)
        except yaml.YAMLError:
            continue  # the invalid fixtures: their refusals are checked below
        assert loader._load(raw) == checked
    assert loader._load(texts[-1])["b"] == "18:00" and loader._load(texts[-1])["a"] == "on"

    refusals = {
        b"a: 1\na: 2\n": "line 2, column 1: invalid YAML: duplicate key 'a'",
        b"[" * 70 + b"]" * 70: "invalid YAML: nested deeper than 64 levels",
        b"a: &x 1\n" + b"".join(b"k%d: *x\n" % i for i in range(120)):
            "line 102, column 7: invalid YAML: more than 100 aliases",
    }
    for raw, words in refusals.items():
        with pytest.raises(PlaybookInvalid) as refused:
            parse_yaml(raw, "t")
        assert words in str(refused.value)
