"""An incident carries only the people it can reach or must authorize, and reaches exactly
whom it would have reached with the whole directory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from domain.directory import (
    Directory,
    Period,
    RosterOverride,
    Target,
    TimeOff,
    resolve_targets,
)
from domain.incident import DirectorySnapshot
from domain.incident_directory import (
    carried_by_incidents,
    for_incident,
    incident_snapshot,
    named_people,
)
from domain.ledger import APPROVER_ACCESS, COMMUNICATOR_ACCESS, eligible_voters, has_access
from domain.loader import load_playbook, sha256

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yaml"))
REPORTERS = 2_000
MONDAY = datetime(2026, 3, 2, tzinfo=UTC)  # pinned: every instant below is relative to it


def _reporter(n: int) -> dict[str, Any]:
    return {"id": f"emp-{n:05d}", "name": f"Employee {n}", "email": f"emp{n}@example.com",
            "access": ["reporter"], "timezone": "Europe/Berlin",
            "working_hours": {"days": ["mon", "tue"], "start": "06:00", "end": "14:00"}}


def _company() -> dict[str, Any]:
    """The demo directory, with 2,000 reporters spread between its people, a reporter who is
    someone's deputy, and a deputy of that deputy."""
    data: dict[str, Any] = yaml.safe_load((ROOT / "config" / "directory.yaml").read_text())
    staff = data["people"]
    people: list[dict[str, Any]] = []
    step = REPORTERS // (len(staff) + 1)
    for index, person in enumerate(staff):
        people += [_reporter(n) for n in range(index * step, (index + 1) * step)]
        people.append(person)
    people += [_reporter(n) for n in range(len(staff) * step, REPORTERS)]
    people += [{"id": "wendy-warehouse", "name": "Wendy", "access": ["reporter"],
                "deputies": ["walt-warehouse"]},
               {"id": "walt-warehouse", "name": "Walt", "access": ["reporter"]}]
    staff[0].setdefault("deputies", []).append("wendy-warehouse")
    data["people"] = people
    return data


@pytest.fixture(scope="module")
def company() -> DirectorySnapshot:
    raw = yaml.safe_dump(_company()).encode()
    return DirectorySnapshot(sha256=sha256(raw),
                             definition=Directory.model_validate(yaml.safe_load(raw)))


def _target_lists(model: object) -> list[list[Target]]:
    """Every list of targets anywhere in a playbook (approvers, escalation tiers, notify...)."""
    found: list[list[Target]] = []
    if isinstance(model, list):
        if model and all(isinstance(item, Target) for item in model):
            found.append(model)
        for item in model:
            found += _target_lists(item)
    elif isinstance(model, dict):
        for item in model.values():
            found += _target_lists(item)
    elif isinstance(model, BaseModel):
        for name in type(model).model_fields:
            found += _target_lists(getattr(model, name))
    return found


def test_an_incident_carries_the_staff_not_every_reporter(company: DirectorySnapshot) -> None:
    playbook = load_playbook(ROOT / "playbooks" / "viral-complaint.yaml", company.definition)
    carried = incident_snapshot(company, playbook)
    ids = [p.id for p in carried.definition.people]
    staff = [p["id"] for p in yaml.safe_load(
        (ROOT / "config" / "directory.yaml").read_text())["people"]]
    # the staff in directory order (not the demo's Ray, who only reports), the reporter who
    # deputizes and her own deputy
    assert ids == [*(p for p in staff if p != "ray-reporter"), "wendy-warehouse",
                   "walt-warehouse"]
    assert carried.sha256 == company.sha256  # still pins the reviewed version
    assert carried.definition.roles == company.definition.roles
    assert carried.definition.rosters == company.definition.rosters
    full_bytes = len(company.model_dump_json())
    carried_bytes = len(carried.model_dump_json())
    assert full_bytes > 400_000 and carried_bytes < 12_000, (full_bytes, carried_bytes)


def test_a_person_the_playbook_names_is_carried_even_if_they_only_report(
        company: DirectorySnapshot) -> None:
    spec = {"id": "agency", "name": "Agency", "version": 1,
            "defaults": {"channels": ["log"]},
            "steps": [{"id": "tell", "notify": {"to": [{"person": "emp-00042"}],
                                                "message": "Heads up"}},
                      {"id": "done", "resolution": {}}]}
    from domain.loader import snapshot_playbook

    playbook = snapshot_playbook(yaml.safe_dump(spec).encode(), company.definition, "agency")
    assert named_people(playbook.definition) == {"emp-00042"}
    carried = incident_snapshot(company, playbook).definition
    assert carried.has_person("emp-00042") and not carried.has_person("emp-00041")


def test_a_directory_of_staff_only_is_carried_as_it_is(company: DirectorySnapshot) -> None:
    staff = for_incident(company.definition)
    assert for_incident(staff) is staff


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.stem)
def test_incidents_reach_exactly_whom_the_whole_directory_reaches(
        path: Path, company: DirectorySnapshot) -> None:
    playbook = load_playbook(path, company.definition)
    full = company.definition
    carried = incident_snapshot(company, playbook).definition
    rosters = [r.id for r in full.rosters]
    overlay = TimeOff(  # someone away and a roster override, as the time-off API sets them
        revision=1,
        away={"cara-comms": [Period(start=MONDAY + timedelta(days=1),
                                    end=MONDAY + timedelta(days=3))]},
        overrides={rosters[0]: [RosterOverride(start=MONDAY + timedelta(days=4),
                                               end=MONDAY + timedelta(days=6),
                                               member="leo-legal")]})
    target_lists = _target_lists(playbook.definition)
    assert target_lists
    checked = 0
    for whole, part in ((full, carried), (overlay.apply(full), overlay.apply(carried))):
        for hour in range(0, 8 * 24, 5):  # every 5 hours for 8 days: hours, weekends, on-call
            at = MONDAY + timedelta(hours=hour)
            for targets in target_lists:
                for respect in (True, False):
                    assert resolve_targets(targets, part, at, respect_hours=respect) == \
                        resolve_targets(targets, whole, at, respect_hours=respect)
                    checked += 1
    assert checked > 100
    for person in carried.people:  # who may vote for whom, and who may run the incident
        assert has_access(carried, person.id, COMMUNICATOR_ACCESS) == \
            has_access(full, person.id, COMMUNICATOR_ACCESS)
        for role in [None, *(r.id for r in full.roles)]:
            assert eligible_voters(carried, role, person.id) == \
                eligible_voters(full, role, person.id)
    # someone who only reports may not do anything an incident checks, in either directory
    assert not has_access(carried, "emp-00007", APPROVER_ACCESS)
    assert not has_access(full, "emp-00007", APPROVER_ACCESS)


def test_who_may_stand_in_on_a_roster(company: DirectorySnapshot) -> None:
    directory = company.definition
    assert carried_by_incidents(directory, directory.person("leo-legal"))
    assert not carried_by_incidents(directory, directory.person("emp-00007"))


def test_the_registry_finds_people_by_id_and_follows_a_changed_directory_file(
        tmp_path: Path) -> None:
    from api.playbook_registry import PlaybookRegistry

    data = _company()
    directory_file = tmp_path / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(data))
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "viral-complaint.yaml").write_bytes(
        (ROOT / "playbooks" / "viral-complaint.yaml").read_bytes())
    registry = PlaybookRegistry(tmp_path / "playbooks", directory_file)
    person = registry.person("emp-01999")
    assert person is not None and person.name == "Employee 1999"
    assert registry.access_of("emp-01999") == ["reporter"]
    assert registry.person("nina-new") is None
    playbook = registry.get("viral-complaint")
    assert playbook is not None
    before = registry.incident_directory(playbook)
    assert not before.definition.has_person("nina-new")

    data["people"].append({"id": "nina-new", "name": "Nina", "roles": ["legal"],
                           "access": ["reporter", "approver"]})
    directory_file.write_text(yaml.safe_dump(data))  # a new size: the registry re-reads it
    found = registry.person("nina-new")
    assert found is not None and found.roles == ["legal"]
    assert registry.access_of("nina-new") == ["approver", "reporter"]
    after = registry.incident_directory(registry.get("viral-complaint") or playbook)
    assert after.sha256 != before.sha256 and after.definition.has_person("nina-new")
