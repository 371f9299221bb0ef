"""The directory: the demo file, working hours across time zones, rosters, and who gets
reached right now (`resolve_targets`)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from core.config import ROOT
from core.payloads import DATA_CONVERTER
from domain.directory import (
    AccessRole,
    Assignment,
    Directory,
    Roster,
    Target,
    WorkingHours,
    resolve_targets,
)
from domain.incident import DirectorySnapshot
from domain.loader import load_directory
from domain.validation import PlaybookInvalid

DEMO_FILE = ROOT / "config" / "directory.yaml"
NEW_YORK, LONDON, SINGAPORE = (ZoneInfo(z) for z in
                               ("America/New_York", "Europe/London", "Asia/Singapore"))
UTC = ZoneInfo("UTC")
SINK = "/demo/sink/slack"


@pytest.fixture(scope="module")
def demo() -> Directory:
    return load_directory(DEMO_FILE).definition


def ids(assignments: list[Assignment]) -> list[str]:
    return [a.person_id for a in assignments]


# ---- the demo directory ---------------------------------------------------------------

REQUIRED_PEOPLE = {
    "lena-legal": ({"legal"}, {"approver"}),
    "leo-legal": ({"legal"}, {"approver"}),
    "cara-comms": ({"comms-lead"}, {"approver"}),
    "colin-comms": ({"comms-lead"}, {"approver"}),
    "chen-comms": ({"comms-lead"}, {"approver"}),
    "chloe-comms": ({"comms-lead"}, {"approver"}),
    "vera-vp": ({"exec"}, {"approver", "leader"}),
    "gabe-counsel": ({"legal"}, {"approver"}),
    "sam-social": ({"social"}, {"communicator"}),
    "eve-exec": ({"exec"}, {"approver", "leader"}),
    "ada-admin": (set(), {"admin", "communicator"}),
    "olga-oncall": (set(), {"approver"}),
    "ray-reporter": (set(), {"reporter"}),
    "sec-sanjay": ({"security"}, set()),
}


@pytest.mark.parametrize("person_id", sorted(REQUIRED_PEOPLE))
def test_demo_has_the_people_the_scenarios_use(demo: Directory, person_id: str) -> None:
    roles, access = REQUIRED_PEOPLE[person_id]
    person = demo.person(person_id)
    assert roles <= set(person.roles)
    assert access <= {a.value for a in person.access}
    assert AccessRole.reporter in person.access  # anyone may report
    assert person.email is not None and person.email.endswith("@example.com")
    assert person.webhook == SINK


def test_demo_has_four_comms_leads_and_a_reporter_with_no_other_access(demo: Directory) -> None:
    assert sorted(p.id for p in demo.members_of("comms-lead")) == [
        "cara-comms", "chen-comms", "chloe-comms", "colin-comms"]
    assert demo.person("ray-reporter").access == [AccessRole.reporter]


def test_demo_spans_three_time_zones_and_five_business_roles(demo: Directory) -> None:
    zones = {p.timezone for p in demo.people if p.working_hours is not None}
    assert {"America/New_York", "Europe/London", "Asia/Singapore"} <= zones
    role_ids = {r.id for r in demo.roles}
    assert {"legal", "comms-lead", "social", "exec", "security", "product-safety"} <= role_ids
    assert all(demo.members_of(role) for role in role_ids), "every role has someone in it"


def test_demo_on_call_cover(demo: Directory) -> None:
    assert {(r.id, r.oncall) for r in demo.roles if r.oncall} == {
        ("legal", "legal-oncall"), ("comms-lead", "comms-oncall"), ("exec", "exec-oncall")}
    assert {r.id: r.rotation for r in demo.rosters} == {
        "legal-oncall": timedelta(weeks=1), "comms-oncall": timedelta(weeks=1),
        "exec-oncall": timedelta(weeks=1)}
    assert demo.person("olga-oncall").working_hours is None  # always reachable


def test_demo_directory_survives_the_trip_through_temporal() -> None:
    snapshot = load_directory(DEMO_FILE)
    converter = DATA_CONVERTER.payload_converter
    payloads = converter.to_payloads([snapshot])
    assert converter.from_payloads(payloads, [DirectorySnapshot]) == [snapshot]


def test_demo_office_hours_are_read_as_clock_times(demo: Directory) -> None:
    hours = demo.person("cara-comms").working_hours
    assert hours is not None
    assert (hours.days, hours.start, hours.end) == (
        ["mon", "tue", "wed", "thu", "fri"], time(9, 0), time(18, 0))


# ---- working hours --------------------------------------------------------------------

NEW_YORK_OFFICE = {"lena-legal", "gabe-counsel", "cara-comms", "colin-comms", "eve-exec",
                   "sam-social", "ray-reporter"}


# 2026-11-21 is a Saturday, 2026-11-20 a Friday.
@pytest.mark.parametrize(("zone", "also_reachable"), [
    (NEW_YORK, set()),          # Saturday 07:00 London, 15:00 Singapore
    (LONDON, set()),            # Friday 21:00 New York, Saturday 10:00 Singapore
    (UTC, set()),
    (SINGAPORE, NEW_YORK_OFFICE),  # still Friday 13:00 in New York
])
def test_saturday_0200_local(demo: Directory, zone: ZoneInfo, also_reachable: set[str]) -> None:
    at = datetime(2026, 11, 21, 2, 0, tzinfo=zone)
    reachable = {p.id for p in demo.people if p.available_at(at)}
    assert reachable == {"olga-oncall"} | also_reachable
    assert not any(p.available_at(at) for p in demo.people
                   if p.timezone == str(zone) and p.working_hours is not None)


def test_friday_1740_new_york_only_new_york_is_in_the_office(demo: Directory) -> None:
    at = datetime(2026, 11, 20, 17, 40, tzinfo=NEW_YORK)  # 22:40 London, Sat 06:40 Singapore
    reachable = {p.id for p in demo.people if p.available_at(at)}
    assert reachable == NEW_YORK_OFFICE | {"olga-oncall"}


@pytest.mark.parametrize(("local", "inside"), [
    (datetime(2026, 11, 16, 9, 0), True),     # Monday, start is inclusive
    (datetime(2026, 11, 16, 8, 59), False),
    (datetime(2026, 11, 16, 17, 59), True),
    (datetime(2026, 11, 16, 18, 0), False),   # end is exclusive
    (datetime(2026, 11, 21, 12, 0), False),   # Saturday
    (datetime(2026, 11, 22, 12, 0), False),   # Sunday
])
def test_office_hours_bounds(local: datetime, inside: bool) -> None:
    assert WorkingHours().contains(local) is inside


OVERNIGHT = WorkingHours(days=["mon", "tue", "wed", "thu", "fri"], start=time(22, 0),
                         end=time(6, 0))


@pytest.mark.parametrize(("local", "inside"), [
    (datetime(2026, 11, 17, 23, 0), True),    # Tuesday night
    (datetime(2026, 11, 18, 5, 59), True),    # Wednesday early: Tuesday's shift
    (datetime(2026, 11, 18, 6, 0), False),
    (datetime(2026, 11, 18, 12, 0), False),   # daytime
    (datetime(2026, 11, 21, 3, 0), True),     # Saturday 03:00 ends Friday's shift
    (datetime(2026, 11, 21, 22, 0), False),   # Saturday's shift doesn't exist
    (datetime(2026, 11, 16, 5, 0), False),    # Monday 05:00 would be Sunday's shift
    (datetime(2026, 11, 16, 22, 0), True),    # Monday's shift starts
])
def test_overnight_hours_belong_to_the_day_they_start(local: datetime, inside: bool) -> None:
    assert OVERNIGHT.contains(local) is inside


def test_availability_uses_the_persons_zone_across_daylight_saving() -> None:
    directory = Directory.model_validate({"people": [
        {"id": "nyc", "name": "NYC", "timezone": "America/New_York", "working_hours": {}}]})
    person = directory.person("nyc")
    # 09:30 New York is 14:30 UTC in winter (EST) and 13:30 UTC in summer (EDT).
    assert person.available_at(datetime(2026, 11, 16, 14, 30, tzinfo=UTC))
    assert not person.available_at(datetime(2026, 11, 16, 13, 30, tzinfo=UTC))
    assert person.available_at(datetime(2026, 7, 13, 13, 30, tzinfo=UTC))


@pytest.mark.parametrize(("hours", "fragment"), [
    ({"start": "09:00", "end": "09:00"}, "start and end must differ"),
    ({"days": []}, "at least one day"),
    ({"days": ["monday"]}, "Input should be 'mon'"),
    ({"start": 9}, 'write times as "HH:MM"'),
    ({"start": "09:00+01:00"}, "local wall-clock times"),
])
def test_bad_working_hours_are_refused(hours: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        WorkingHours.model_validate(hours)


def test_unquoted_yaml_clock_times_are_not_read_as_base_60_numbers(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text("people:\n  - id: ann\n    name: Ann\n"
                    "    working_hours: {start: 8:30, end: 17:30}\n")  # YAML 1.1: 510, 1050
    hours = load_directory(path).definition.person("ann").working_hours
    assert hours is not None and (hours.start, hours.end) == (time(8, 30), time(17, 30))


# ---- rosters --------------------------------------------------------------------------

ROSTER = Roster(id="r", members=["a", "b", "c"], rotation=timedelta(weeks=1),
                start=datetime(2026, 1, 5, 9, 0, tzinfo=UTC))


@pytest.mark.parametrize(("at", "on_call"), [
    (datetime(2026, 1, 5, 9, 0, tzinfo=UTC), "a"),
    (datetime(2026, 1, 12, 8, 59, tzinfo=UTC), "a"),
    (datetime(2026, 1, 12, 9, 0, tzinfo=UTC), "b"),
    (datetime(2026, 1, 19, 9, 0, tzinfo=UTC), "c"),
    (datetime(2026, 1, 26, 9, 0, tzinfo=UTC), "a"),   # wraps around
    (datetime(2026, 1, 5, 8, 0, tzinfo=UTC), "c"),    # before the start: counts backwards
    (datetime(2026, 1, 12, 10, 0, tzinfo=LONDON), "b"),
])
def test_roster_rotates_weekly(at: datetime, on_call: str) -> None:
    assert ROSTER.on_call(at) == on_call


def test_demo_exec_rotation_alternates_eve_and_vera(demo: Directory) -> None:
    roster = demo.roster("exec-oncall")
    week = timedelta(weeks=1)
    start = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert [roster.on_call(start + i * week) for i in range(4)] == [
        "eve-exec", "vera-vp", "eve-exec", "vera-vp"]


def test_roster_start_needs_a_utc_offset() -> None:
    with pytest.raises(ValidationError, match="needs a UTC offset"):
        Roster(id="r", members=["a"], start=datetime(2026, 1, 5, 9, 0))


# ---- resolve_targets ------------------------------------------------------------------

SATURDAY_0200_UTC = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
FRIDAY_1740_NY = datetime(2026, 11, 20, 17, 40, tzinfo=NEW_YORK)


def test_saturday_legal_goes_to_the_on_call_person_once(demo: Directory) -> None:
    got = resolve_targets([Target(role="legal")], demo, SATURDAY_0200_UTC)
    assert got == [Assignment(person_id="olga-oncall", role="legal", via="oncall",
                              replaces="lena-legal")]


def test_saturday_data_breach_approvers(demo: Directory) -> None:
    # Security has no roster, so sanjay is kept; legal is covered by the on-call person.
    got = resolve_targets([Target(role="security"), Target(role="legal")], demo,
                          SATURDAY_0200_UTC)
    assert [(a.person_id, a.role, a.via) for a in got] == [
        ("sec-sanjay", "security", "role"), ("olga-oncall", "legal", "oncall")]


def test_friday_evening_holding_statement_approvers(demo: Directory) -> None:
    got = resolve_targets([Target(role="legal"), Target(role="comms-lead")], demo, FRIDAY_1740_NY)
    assert [(a.person_id, a.role, a.via, a.replaces) for a in got] == [
        ("lena-legal", "legal", "role", None),
        ("olga-oncall", "legal", "oncall", "leo-legal"),
        ("gabe-counsel", "legal", "role", None),
        ("cara-comms", "comms-lead", "role", None),
        ("colin-comms", "comms-lead", "role", None),
    ]  # chen and chloe are off-hours; their stand-in olga already has a task


def test_off_hours_person_target_is_replaced_by_their_roles_on_call(demo: Directory) -> None:
    got = resolve_targets([Target(person="gabe-counsel")], demo, SATURDAY_0200_UTC)
    assert got == [Assignment(person_id="olga-oncall", role="legal", via="oncall",
                              replaces="gabe-counsel")]


def test_in_hours_person_target_is_reached_directly(demo: Directory) -> None:
    got = resolve_targets([Target(person="gabe-counsel")], demo, FRIDAY_1740_NY)
    assert got == [Assignment(person_id="gabe-counsel", role="legal", via="direct")]


def test_no_roster_fallback_keeps_the_off_hours_person(demo: Directory) -> None:
    got = resolve_targets([Target(role="social"), Target(person="ray-reporter")], demo,
                          SATURDAY_0200_UTC)
    assert [(a.person_id, a.role, a.via) for a in got] == [
        ("sam-social", "social", "role"), ("ray-reporter", None, "direct")]


def test_roster_target_reaches_whoever_is_on_call(demo: Directory) -> None:
    eve_week = datetime(2026, 11, 9, 12, 0, tzinfo=UTC)  # 44 weeks after the start
    vera_week = eve_week + timedelta(weeks=1)
    expected = {eve_week: "eve-exec", vera_week: "vera-vp"}
    for at, person_id in expected.items():
        assert demo.roster("exec-oncall").on_call(at) == person_id
        got = resolve_targets([Target(roster="exec-oncall")], demo, at)
        assert got == [Assignment(person_id=person_id, via="roster")]


def test_duplicates_are_reached_once_in_target_order(demo: Directory) -> None:
    got = resolve_targets(
        [Target(person="cara-comms"), Target(role="comms-lead"), Target(person="cara-comms")],
        demo, datetime(2026, 11, 16, 10, 0, tzinfo=NEW_YORK))  # 15:00 London, 23:00 Singapore
    assert [(a.person_id, a.via) for a in got] == [
        ("cara-comms", "direct"), ("colin-comms", "role"), ("olga-oncall", "oncall"),
        ("chloe-comms", "role")]


def test_ignoring_working_hours_reaches_every_member(demo: Directory) -> None:
    got = resolve_targets([Target(role="comms-lead")], demo, SATURDAY_0200_UTC,
                          respect_hours=False)
    assert ids(got) == ["cara-comms", "colin-comms", "chen-comms", "chloe-comms"]
    assert {a.via for a in got} == {"role"}


def test_on_call_person_who_is_off_hours_still_gets_the_page() -> None:
    directory = Directory.model_validate({
        "people": [
            {"id": "ann", "name": "Ann", "roles": ["legal"], "working_hours": {}},
            {"id": "bob", "name": "Bob", "roles": ["legal"], "working_hours": {}},
        ],
        "roles": [{"id": "legal", "oncall": "legal-oncall"}],
        "rosters": [{"id": "legal-oncall", "members": ["bob"]}],
    })
    got = resolve_targets([Target(role="legal")], directory, SATURDAY_0200_UTC)
    assert got == [Assignment(person_id="bob", role="legal", via="oncall", replaces="ann")]


# ---- directory validation -------------------------------------------------------------

@pytest.mark.parametrize(("data", "fragment"), [
    ({"people": [{"id": "a", "name": "A", "roles": ["legal"]}]},
     "person 'a' has unknown role 'legal'"),
    ({"people": [{"id": "a", "name": "A"}], "rosters": [{"id": "r", "members": ["zed"]}]},
     "roster 'r' has unknown member 'zed'"),
    ({"people": [{"id": "a", "name": "A"}, {"id": "a", "name": "A2"}]},
     "duplicate person id 'a'"),
    ({"people": [{"id": "a", "name": "A"}], "roles": [{"id": "legal", "oncall": "nope"}]},
     "role 'legal' names unknown on-call roster 'nope'"),
    ({"people": [{"id": "a", "name": "A", "timezone": "Mars/Olympus"}]},
     "unknown IANA time zone 'Mars/Olympus'"),
    ({"people": [{"id": "a", "name": "A", "access": ["superuser"]}]},
     "Input should be 'reporter'"),
    ({"people": [{"id": "a", "name": "A", "email": "not an email"}]}, "String should match"),
    ({"people": []}, "at least 1 item"),
])
def test_directory_mistakes_are_refused(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        Directory.model_validate(data)


def test_directory_file_errors_carry_paths(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text("people:\n  - id: a\n    name: A\n    timezone: Mars/Olympus\n"
                    "    emial: a@example.com\n")
    with pytest.raises(PlaybookInvalid) as caught:
        load_directory(path)
    assert {(i.path, i.message.split(" '")[0]) for i in caught.value.issues} == {
        ("people[0].timezone", "unknown IANA time zone"), ("people[0].emial", "unknown key")}
