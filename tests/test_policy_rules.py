"""The version store's rules and the diff, as an admin meets them (pure: no servers)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.config import ROOT
from domain.directory import Directory
from domain.loader import load_directory, sha256
from domain.playbook import Requirement
from domain.playbook_diff import directory_diff, playbook_diff
from domain.policy_versions import (
    DIRECTORY,
    BootstrapRequest,
    CatalogState,
    ChangePolicy,
    PolicyError,
    ProposeRequest,
    ReviewOutcome,
    ReviewState,
    add_proposal,
    bootstrap,
    check_propose,
    close_proposal,
    pack_text,
    playbook_subject,
    renumber,
)

NOW = datetime(2026, 3, 6, 10, 0, tzinfo=UTC)
VIRAL = (ROOT / "playbooks" / "viral-complaint.yaml").read_bytes()
DEMO = load_directory(ROOT / "config" / "directory.yaml").definition
SUBJECT = playbook_subject("viral-complaint")


def seeded() -> CatalogState:
    state = CatalogState()
    directory = (ROOT / "config" / "directory.yaml").read_bytes()
    for subject, raw, number in ((DIRECTORY, directory, 1), (SUBJECT, VIRAL, 1)):
        bootstrap(state, BootstrapRequest(subject=subject, number=number, sha256=sha256(raw),
                                          text_z=pack_text(raw)), NOW)
    return state


def proposal(raw: bytes, number: int | None, author: str = "ada-admin",
             subject: str = SUBJECT) -> ProposeRequest:
    return ProposeRequest(subject=subject, number=number, sha256=sha256(raw),
                          text_z=pack_text(raw), author=author)


def refused(state: CatalogState, req: ProposeRequest) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        check_propose(state, req)
    return caught.value


# ---- numbers name one text --------------------------------------------------------------

def test_a_number_names_one_text_forever() -> None:
    state = seeded()
    edited = VIRAL.replace(b"deadline: 4h", b"deadline: 2h")
    error = refused(state, proposal(edited, 1))
    assert error.code == "VersionTaken"
    assert error.message.startswith("playbook viral-complaint v1 already exists (active, "
                                    "sha256 ")
    assert error.message.endswith("bump `version` to 2")
    assert check_propose(state, proposal(VIRAL, 1)) is not None  # the same text: idempotent


def test_numbers_only_go_up_and_one_review_is_open_at_a_time() -> None:
    state = seeded()
    v3 = renumber(VIRAL, 3)
    add_proposal(state, proposal(v3, 3), NOW, "review/v{number}")
    busy = refused(state, proposal(renumber(VIRAL, 4), 4))
    assert busy.code == "ProposalOpen" and "v3 (by ada-admin) is still under review" in \
        busy.message
    lower = refused(state, proposal(renumber(VIRAL, 2), 2))
    assert lower.code == "VersionOutdated" and "a higher number (4)" in lower.message


def test_a_rejected_number_stays_taken() -> None:
    state = seeded()
    record = add_proposal(state, proposal(renumber(VIRAL, 2), 2), NOW, "review/v{number}")
    assert record.proposal_id == "review/v2"
    close_proposal(state, review_of(record.number, ReviewOutcome.rejected), NOW)
    error = refused(state, proposal(renumber(VIRAL, 2).replace(b"4h", b"3h"), 2))
    assert error.code == "VersionTaken" and "(rejected," in error.message


def review_of(number: int, outcome: ReviewOutcome, subject: str = SUBJECT) -> ReviewState:
    return ReviewState(proposal_id=f"review/v{number}", subject=subject, number=number,
                       sha256="0" * 64, author="ada-admin", policy="2 of admin",
                       eligible=[], outcome=outcome)


def test_approval_supersedes_the_active_version() -> None:
    state = seeded()
    add_proposal(state, proposal(renumber(VIRAL, 2), 2), NOW, "review/v{number}")
    close_proposal(state, review_of(2, ReviewOutcome.approved), NOW)
    versions = state.subject(SUBJECT).versions
    assert [(v.number, v.status, v.superseded_by) for v in versions] == [
        (1, "superseded", 2), (2, "active", None)]
    assert state.active_set().subjects[SUBJECT].number == 2


def test_the_directory_is_numbered_by_the_store_and_an_identical_text_is_no_change() -> None:
    state = seeded()
    directory = (ROOT / "config" / "directory.yaml").read_bytes()
    same = refused(state, proposal(directory, None, subject=DIRECTORY))
    assert same.code == "NoChange"
    changed = directory.replace(b"name: Ray Reyes (warehouse)", b"name: Ray Reyes")
    record = add_proposal(state, proposal(changed, None, subject=DIRECTORY), NOW, "r/{number}")
    assert record.number == 2


def test_nothing_is_proposed_before_the_store_is_seeded() -> None:
    assert refused(CatalogState(), proposal(VIRAL, 1)).code == "StoreNotSeeded"


def test_bootstrap_only_creates_a_first_version() -> None:
    state = seeded()
    other = renumber(VIRAL, 7)
    kept = bootstrap(state, BootstrapRequest(subject=SUBJECT, number=7, sha256=sha256(other),
                                             text_z=pack_text(other)), NOW)
    assert kept.number == 1 and kept.bootstrap


def test_renumber_changes_only_the_top_level_version_line() -> None:
    text = b"id: x\nname: X\nversion: 2  # bumped\nsteps:\n  - id: a\n    version: 9\n"
    assert renumber(text, 5) == b"id: x\nname: X\nversion: 5\nsteps:\n  - id: a\n    version: 9\n"
    with pytest.raises(PolicyError) as caught:
        renumber(b"{id: x, version: 2}", 3)
    assert caught.value.code == "RollbackInvalid"


# ---- the change policy ----------------------------------------------------------------------

def test_the_default_policy_is_two_admins_not_the_author() -> None:
    policy = ChangePolicy()
    assert policy.describe() == "2 of admin, not the author"
    assert sorted(policy.eligible(DEMO, "ada-admin")) == ["gabe-counsel", "vera-vp"]
    tally = policy.tally(DEMO, "ada-admin")
    assert tally.vote("vera-vp", True) == "pending"
    assert tally.vote("gabe-counsel", True) == "approved"


def test_a_policy_nobody_can_meet_is_refused_up_front() -> None:
    lonely = Directory.model_validate({"people": [
        {"id": "ada", "name": "Ada", "access": ["admin"]},
        {"id": "ben", "name": "Ben", "access": ["admin"]}]})
    with pytest.raises(PolicyError) as caught:
        ChangePolicy().tally(lonely, "ada")
    assert caught.value.code == "PolicyUnsatisfiable"
    assert caught.value.message == ("the change policy (2 of admin, not the author) cannot be "
                                    "met: the active directory has ben to approve a change by "
                                    "ada")


def test_per_role_rules_and_veto_use_the_incident_quorum_rules() -> None:
    policy = ChangePolicy(access=["admin", "approver"], require=[
        Requirement(role="legal", min=1), Requirement(role="exec", min=1)], veto=["legal"])
    assert policy.describe() == ("1 of legal AND 1 of exec (admin or approver), not the author; "
                                 "veto: legal")
    tally = policy.tally(DEMO, "ada-admin")
    assert tally.vote("vera-vp", True) == "pending"  # exec yes, legal still missing
    assert tally.vote("lena-legal", False) == "vetoed"


# ---- the diff ----------------------------------------------------------------------------------

def test_the_diff_names_the_changed_quorum_rule_tier_and_steps() -> None:
    after = renumber(VIRAL, 3).replace(
        b"        - role: comms-lead\n          min: 2\n",
        b"        - role: comms-lead\n          min: 1\n").replace(
        b"          after: 30m\n", b"          after: 45m\n").replace(
        b"  - id: resolved\n", b"  - id: wait-a-bit\n    wait: {duration: 5m}\n  - id: resolved\n")
    diff = playbook_diff(SUBJECT, (2, 3), (sha256(VIRAL), sha256(after)), VIRAL, after)
    assert [(r.step, r.before, r.after) for r in diff.quorum_rules] == [(
        "holding-statement", "1 of legal AND 2 of comms-lead; veto: legal; deadline 4h",
        "1 of legal AND 1 of comms-lead; veto: legal; deadline 4h")]
    assert diff.tiers[0].before[1].startswith("'Executive on call' after 30m notify "
                                              "roster:exec-oncall")
    assert diff.tiers[0].after[1].startswith("'Executive on call' after 45m")
    assert [(s.step, s.change) for s in diff.steps] == [
        ("holding-statement", "changed"), ("wait-a-bit", "added")]
    assert "approval.require" in diff.steps[0].fields
    assert "-          min: 2\n+          min: 1\n" in diff.unified
    assert diff.summary[0] == "version: 2 -> 3"


def test_the_directory_diff_names_people_and_rosters() -> None:
    before = (ROOT / "config" / "directory.yaml").read_bytes()
    after = before.replace(b"name: Ray Reyes (warehouse)", b"name: Ray Reyes (depot)")
    diff = directory_diff((1, 2), (sha256(before), sha256(after)), before, after)
    assert diff.summary == ["person ray-reporter changed: name"]


def test_only_an_admin_proposes_and_only_if_others_can_approve() -> None:
    state = seeded()
    error = refused(state, proposal(renumber(VIRAL, 2), 2, author="cara-comms"))
    assert error.code == "NotAnAdmin"
    assert error.message == ("cara-comms is not an admin in the active directory, so cannot "
                             "propose a policy change")
    strict = proposal(renumber(VIRAL, 2), 2).model_copy(
        update={"policy": ChangePolicy(approvals=3)})
    error = refused(state, strict)
    assert error.code == "PolicyUnsatisfiable"
    assert "has gabe-counsel, vera-vp to approve a change by ada-admin" in error.message
