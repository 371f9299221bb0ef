"""Time off: an away approver is skipped like someone outside working hours, and a roster
override ("Leo covers legal on-call this weekend") takes effect and ends on time."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.directory import Directory, TimeOff, resolve_targets
from domain.incident import DirectorySnapshot, StatusUpdateRequest
from domain.loader import sha256
from tests.factories import directory, snapshot, viral_playbook
from tests.workflow_harness import Harness, eventually
from workflows.incident import AWAY_HANDS_OVER_ALWAYS, IncidentWorkflow

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


def test_ignoring_working_hours_still_replaces_someone_who_is_away() -> None:
    """`respect_working_hours: false` reaches people at any hour, but not someone on a plane:
    they are replaced as if off-hours. The question is asked only for someone away (a
    workflow records a patch marker when it is asked), and a caller that does not ask (a
    change review, which must reach its reviewers themselves) keeps them."""
    from domain.directory import Target
    trip = period(MONDAY_1500 - timedelta(hours=1), MONDAY_1500 + timedelta(hours=2),
                  reason="flight to Tokyo")
    people = with_time_off(directory(), away={"lena-legal": [trip]})
    saturday_night = datetime(2090, 3, 4, 2, 0, tzinfo=UTC)  # off-hours for every lawyer
    asked: list[str] = []

    def hands_over() -> bool:
        asked.append("asked")
        return True

    anyone = resolve_targets([Target(role="legal")], people, saturday_night,
                             respect_hours=False, away_hands_over=hands_over)
    assert {a.person_id for a in anyone} == {"lena-legal", "leo-legal", "gabe-counsel",
                                             "olga-oncall"}
    assert asked == []  # nobody away at that hour: nothing to ask
    during = resolve_targets([Target(role="legal")], people, MONDAY_1500,
                             respect_hours=False, away_hands_over=hands_over)
    by_person = {a.person_id: a for a in during}
    assert "lena-legal" not in by_person
    assert (by_person["olga-oncall"].via, by_person["olga-oncall"].replaces) == (
        "oncall", "lena-legal")
    assert asked == ["asked"]
    review = resolve_targets([Target(role="legal")], people, MONDAY_1500, respect_hours=False)
    assert "lena-legal" in {a.person_id for a in review}
    old_run = resolve_targets([Target(role="legal")], people, MONDAY_1500,
                              respect_hours=False, away_hands_over=lambda: False)
    assert "lena-legal" in {a.person_id for a in old_run}  # a run started before the fix


def test_an_away_on_call_person_hands_the_shift_to_the_next_member() -> None:
    """Lena is off-hours and Olga, on call for legal, is on a plane: the shift goes to the
    rotation's next member who is not away, never to someone who cannot answer."""
    from domain.directory import Target
    data = directory().model_dump(mode="json")
    roster = next(r for r in data["rosters"] if r["id"] == "legal-oncall")
    roster["members"] = ["olga-oncall", "leo-legal"]
    roster["rotation"] = "3650d"  # Olga's shift for the whole test
    base = Directory.model_validate(data)
    trip = period(MONDAY_1500 - timedelta(hours=1), MONDAY_1500 + timedelta(hours=2))
    away = with_time_off(base, away={"olga-oncall": [trip]})
    assert base.on_call("legal-oncall", MONDAY_1500) == "olga-oncall"
    assert away.on_call("legal-oncall", MONDAY_1500) == "leo-legal"
    assert away.on_call("legal-oncall", MONDAY_1500, skip_away=False) == "olga-oncall"
    assert away.on_call("legal-oncall", MONDAY_1500 + timedelta(hours=3)) == "olga-oncall"
    picked = resolve_targets([Target(roster="legal-oncall")], away, MONDAY_1500)
    assert [a.person_id for a in picked] == ["leo-legal"]
    everyone = with_time_off(base, away={"olga-oncall": [trip], "leo-legal": [trip]})
    assert everyone.on_call("legal-oncall", MONDAY_1500) == "olga-oncall"  # nobody else


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


async def test_a_playbook_that_ignores_hours_still_skips_an_away_approver(h: Harness) -> None:
    """Saturday 02:00, a playbook that pages people at any hour: the lawyers who are merely
    asleep get their tasks, the one on a plane does not, and on-call stands in for her."""
    start = await h.advance_to("sat", 2, 0, "Europe/London")
    trip = period(start - timedelta(days=1), start + timedelta(days=3), reason="flight")
    people = with_time_off(directory(), away={"lena-legal": [trip]})
    data = viral_playbook(h.publish.url())
    data["defaults"] = {"respect_working_hours": False}
    handle = await h.start(
        snapshot(data, people),
        directory=DirectorySnapshot(sha256=sha256(people.model_dump_json().encode()),
                                    definition=people))
    tasks = await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    holders = {t.assignee: t for t in tasks if t.role == "legal"}
    assert "lena-legal" not in holders
    assert (holders["olga-oncall"].via, holders["olga-oncall"].replaces) == (
        "oncall", "lena-legal")
    assert {"leo-legal", "gabe-counsel"} <= set(holders)  # off-hours, reached anyway
    history = await handle.fetch_history()
    patches = [json.loads(e.marker_recorded_event_attributes.details["patch-data"]
                          .payloads[0].data)["id"]
               for e in history.events if e.HasField("marker_recorded_event_attributes")]
    assert AWAY_HANDS_OVER_ALWAYS in patches


# ---- the operational overlay set through the API ---------------------------------------


def test_the_overlay_is_accountable_and_refuses_what_the_caller_may_not_do() -> None:
    from domain.directory import Period, RosterOverride
    from domain.time_off import SetAway, SetOverrides, TimeOffRefused, change

    at = MONDAY_1500
    trip = Period(start=at, end=at + timedelta(days=2), reason="conference")
    first = change(TimeOff(), SetAway(actor="lena-legal", person_id="lena-legal",
                                      periods=[trip]), at)
    assert first.revision == 1 and first.away["lena-legal"] == [trip]
    assert [(c.revision, c.actor) for c in first.changes] == [(1, "lena-legal")]
    with pytest.raises(TimeOffRefused, match="only their own"):
        change(first, SetAway(actor="cara-comms", person_id="lena-legal", periods=[]), at)
    cover = RosterOverride(start=at, end=at + timedelta(hours=8), member="leo-legal")
    with pytest.raises(TimeOffRefused, match="only an admin"):
        change(first, SetOverrides(actor="lena-legal", roster_id="legal-oncall",
                                   overrides=[cover]), at)
    second = change(first, SetOverrides(actor="ada-admin", admin=True,
                                        roster_id="legal-oncall", overrides=[cover]), at)
    assert second.revision == 2 and second.away == first.away  # other entries kept
    # a week after a period ended it is dropped; an empty list clears
    later = at + timedelta(days=10)
    third = change(second, SetAway(actor="ada-admin", admin=True, person_id="cara-comms",
                                   periods=[]), later)
    assert third.away == {} and third.overrides == {}
    assert [c.actor for c in third.changes] == ["lena-legal", "ada-admin", "ada-admin"]


def test_the_overlay_adds_to_the_pinned_directory_and_its_override_wins() -> None:
    from domain.directory import TimeOff as Overlay

    base = with_time_off(directory(), overrides={"legal-oncall": [
        period(MONDAY_1500, MONDAY_1500 + timedelta(hours=4), member="gabe-counsel")]})
    overlay = Overlay.model_validate({
        "revision": 3,
        "away": {"lena-legal": [period(MONDAY_1500, MONDAY_1500 + timedelta(hours=1))],
                 "someone-new": [period(MONDAY_1500, MONDAY_1500 + timedelta(hours=1))]},
        "overrides": {"legal-oncall": [
            period(MONDAY_1500, MONDAY_1500 + timedelta(hours=2), member="leo-legal"),
            period(MONDAY_1500, MONDAY_1500 + timedelta(hours=2), member="someone-new")]}})
    applied = overlay.apply(base)
    assert not applied.person("lena-legal").available_at(MONDAY_1500)
    roster = applied.roster("legal-oncall")
    assert roster.on_call(MONDAY_1500) == "leo-legal"  # the newer, operational word
    assert roster.on_call(MONDAY_1500 + timedelta(hours=3)) == "gabe-counsel"  # reviewed one
    assert not applied.has_person("someone-new")  # unknown to this snapshot: left out
    assert base.person("lena-legal").available_at(MONDAY_1500)  # the snapshot is unchanged


async def test_a_running_incident_takes_the_overlay_from_its_workflow_never_a_signal(
        h: Harness) -> None:
    """Signals carry no signature: a `time_off` signal saying "Lena is away", at a revision
    so high that no real change would be taken after it, changes nothing. The incident reads
    the overlay from its workflow (changed only by signed updates) and applies that: the
    real change lands, once, under its real author."""
    from core.time_off_store import TimeOffStore
    from domain.directory import Period
    from domain.time_off import SetAway

    start = await h.advance_to("mon", 15, 0, "Europe/London")
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    await h.tasks_when(handle, lambda ts: len(ts) >= 5)
    forged = TimeOff.model_validate({
        "revision": 999, "away": {"lena-legal": [period(start, start + timedelta(days=30))]},
        "changes": [{"revision": 999, "at": start.isoformat(), "actor": "mallory",
                     "what": "away lena-legal: 1 period(s)"}]})
    await handle.signal("time_off", forged)  # no overlay anywhere yet: nothing to apply
    real = await TimeOffStore(h.env.client, h.task_queue).apply(SetAway(
        actor="ada-admin", admin=True, person_id="lena-legal",
        periods=[Period(start=start, end=start + timedelta(hours=2), reason="ill")]))
    await handle.signal("time_off", forged)  # now reads the real overlay instead
    await handle.signal("time_off", real)  # the API's prompt: a repeated revision, ignored

    async def reads_finished() -> int:
        events = (await handle.fetch_history()).events
        reads = {e.event_id for e in events
                 if e.HasField("activity_task_scheduled_event_attributes")
                 and e.activity_task_scheduled_event_attributes.activity_type.name
                 == "time_off_read"}
        return sum(e.activity_task_completed_event_attributes.scheduled_event_id in reads
                   for e in events if e.HasField("activity_task_completed_event_attributes"))
    await eventually(reads_finished, lambda n: n == 3)  # one read per signal
    # an update after the reads is handled after them: then the timeline is complete
    await h.update(handle, IncidentWorkflow.post_status_update, StatusUpdateRequest(
        request_id=uuid.uuid4().hex, actor="sam-social", message="checking"))
    applied = [e for e in await h.timeline(handle) if e.kind == "time_off_applied"]
    assert [(e.actor, e.details["revision"]) for e in applied] == [("ada-admin",
                                                                    real.revision)]


async def test_new_incidents_get_another_api_processs_change_without_waiting_for_it(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two API processes: one sets Lena away, the other opens incidents. While incidents keep
    opening, a stale cache still answers at once while one background read fetches the
    change, and the next call carries it; after a quiet spell the first call reads first."""
    import core.time_off_store as store_module
    from domain.directory import Period
    from domain.time_off import SetAway

    opener = store_module.TimeOffStore(h.env.client, h.task_queue)
    admin = store_module.TimeOffStore(h.env.client, h.task_queue)
    assert await opener.current() is None  # nobody is away yet: no overlay
    at = await h.now()
    changed, _ = await admin.change(SetAway(
        actor="ada-admin", admin=True, person_id="lena-legal",
        periods=[Period(start=at, end=at + timedelta(days=2), reason="flight")]))
    monkeypatch.setattr(store_module, "CACHE_SECONDS", 0.0)  # the opener's cache is stale
    monkeypatch.setattr(store_module, "MAX_STALE_SECONDS", 3600.0)  # ... but recent
    assert await opener.current() is None  # answered from the cache, no wait
    refreshing = opener._refreshing
    assert refreshing is not None
    await refreshing
    fresh = await opener.current()
    assert fresh is not None and fresh.revision == changed.revision
    assert [p.reason for p in fresh.away["lena-legal"]] == ["flight"]
    monkeypatch.setattr(store_module, "MAX_STALE_SECONDS", 0.0)  # a quiet spell
    cleared, _ = await admin.change(SetAway(actor="ada-admin", admin=True,
                                            person_id="lena-legal", periods=[]))
    latest = await opener.current()  # read before answering
    assert latest is not None and latest.revision == cleared.revision
    assert not latest.away.get("lena-legal")


async def test_a_running_api_keeps_the_overlay_fresh_so_a_quiet_spell_costs_no_query(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Incidents are rare, so nearly every one opens after a quiet spell. A started store
    (the API starts its own) keeps the overlay fresh in the background: after the spell,
    opening an incident gets the latest overlay without waiting on Temporal, here a
    Temporal that no longer answers the query at all."""
    import asyncio

    import core.time_off_store as store_module
    from domain.directory import Period
    from domain.time_off import SetAway

    monkeypatch.setattr(store_module, "CACHE_SECONDS", 0.05)
    monkeypatch.setattr(store_module, "MAX_STALE_SECONDS", 0.3)
    opener = store_module.TimeOffStore(h.env.client, h.task_queue)
    admin = store_module.TimeOffStore(h.env.client, h.task_queue)
    await opener.start()
    try:
        at = await h.now()
        changed, _ = await admin.change(SetAway(
            actor="ada-admin", admin=True, person_id="lena-legal",
            periods=[Period(start=at, end=at + timedelta(days=2), reason="flight")]))
        await asyncio.sleep(0.9)  # three times the staleness limit, and nobody opened one

        async def unanswered() -> TimeOff:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        monkeypatch.setattr(opener, "read", unanswered)
        overlay = await asyncio.wait_for(opener.current(), timeout=5)
    finally:
        await opener.stop()
    assert overlay is not None and overlay.revision == changed.revision
    assert [p.reason for p in overlay.away["lena-legal"]] == ["flight"]

