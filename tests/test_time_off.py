"""Time off: an away approver is skipped like someone outside working hours, and a roster
override ("Leo covers legal on-call this weekend") takes effect and ends on time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.directory import Directory, resolve_targets
from domain.incident import DirectorySnapshot
from domain.loader import sha256
from tests.clock import EVEN_WEEK
from tests.factories import directory, snapshot, viral_playbook
from tests.workflow_harness import Harness, fresh_time_env, harness

MONDAY_1500 = datetime(2090, 2, 27, 15, 0, tzinfo=UTC)  # London = UTC in February


def with_time_off(base: Directory, *, away: dict[str, list[dict[str, Any]]] | None = None,
                  overrides: dict[str, list[dict[str, Any]]] | None = None) -> Directory:
    data = base.model_dump(mode="json")
    for person in data["people"]:
        person["away"] = (away or {}).get(person["id"], [])
    for roster in data["rosters"]:
        roster["overrides"] = (overrides or {}).get(roster["id"], [])
    return Directory.model_validate(data)


def period(start: datetime, end: datetime, **extra: Any) -> dict[str, Any]:
    return {"start": start.isoformat(), "end": end.isoformat(), **extra}


def test_an_away_person_is_replaced_by_on_call_only_while_away() -> None:
    trip = period(MONDAY_1500 - timedelta(hours=1), MONDAY_1500 + timedelta(hours=2),
                  reason="flight to Tokyo")
    people = with_time_off(directory(), away={"lena-legal": [trip]})
    from domain.directory import Target
    during = resolve_targets([Target(role="legal")], people, MONDAY_1500)
    by_person = {a.person_id: a for a in during}
    assert "lena-legal" not in by_person
    assert by_person["olga-oncall"].via == "oncall"
    assert by_person["olga-oncall"].replaces == "lena-legal"
    after = resolve_targets([Target(role="legal")], people,
                            MONDAY_1500 + timedelta(hours=2, minutes=30))
    assert "lena-legal" in {a.person_id for a in after}


def test_a_roster_override_takes_effect_and_ends_on_time() -> None:
    saturday = datetime(2090, 3, 4, 0, 0, tzinfo=UTC)
    monday = datetime(2090, 3, 6, 9, 0, tzinfo=UTC)
    people = with_time_off(directory(), overrides={"legal-oncall": [
        period(saturday, monday, member="leo-legal", reason="Leo covers this weekend")]})
    roster = people.roster("legal-oncall")
    assert roster.on_call(saturday - timedelta(seconds=1)) == "olga-oncall"
    assert roster.on_call(saturday) == "leo-legal"
    assert roster.on_call(monday - timedelta(seconds=1)) == "leo-legal"
    assert roster.on_call(monday) == "olga-oncall"


def test_time_off_must_be_a_real_period_with_known_people() -> None:
    bad = directory().model_dump(mode="json")
    bad["people"][0]["away"] = [{"start": "2090-01-02T00:00:00Z", "end": "2090-01-01T00:00:00Z"}]
    with pytest.raises(ValueError, match="must end after it starts"):
        Directory.model_validate(bad)
    bad = directory().model_dump(mode="json")
    bad["rosters"][0]["overrides"] = [{"start": "2090-01-01T00:00:00Z",
                                       "end": "2090-01-02T00:00:00Z", "member": "nobody"}]
    with pytest.raises(ValueError, match="unknown person 'nobody'"):
        Directory.model_validate(bad)


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    async with fresh_time_env() as env, harness(env, redis_url, EVEN_WEEK) as h:
        yield h


async def test_an_away_approver_gets_no_task_and_on_call_stands_in(h: Harness) -> None:
    start = await h.advance_to("mon", 15, 0, "Europe/London")
    trip = period(start - timedelta(days=1), start + timedelta(days=3), reason="vacation")
    people = with_time_off(directory(), away={"lena-legal": [trip]})
    handle = await h.start(
        snapshot(viral_playbook(h.publish.url()), people),
        directory=DirectorySnapshot(sha256=sha256(people.model_dump_json().encode()),
                                    definition=people))
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    holders = {t.assignee: t for t in tasks}
    assert "lena-legal" not in holders  # in hours, but away
    assert holders["olga-oncall"].replaces == "lena-legal"
    assert "leo-legal" in holders or "gabe-counsel" in holders  # in-hours legal still asked
