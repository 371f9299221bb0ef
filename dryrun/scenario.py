"""A dry-run scenario: who does what, and when, in virtual time (pure: no I/O but reading).

    playbook: playbooks/viral-complaint.yaml       # optional; the command line may give it
    start: "fri 17:40 America/New_York"            # or an ISO time; default next weekday 10:00 UTC
    incident: {title: Viral complaint, severity: high}
    events:                                        # in time order, relative to the start
      - at: 5m
        decide: {role: comms-lead, decision: approve, count: 2}
      - at: 20m
        decide: {role: exec, decision: reject}
    until: 5h                                      # stop here if nothing resolved the incident

Someone with no event is silent. Errors carry their path in the file, like playbook errors.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from domain.directory import Directory
from domain.durations import Duration, format_duration, parse_duration
from domain.loader import parse_yaml
from domain.playbook import Severity
from domain.templates import did_you_mean
from domain.validation import PlaybookInvalid, PlaybookIssue, validate_with_paths

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RELATIVE_START = re.compile(
    r"^(?P<day>mon|tue|wed|thu|fri|sat|sun)\s+(?P<hh>\d{1,2}):(?P<mm>\d{2})(?:\s+(?P<tz>\S+))?$",
    re.IGNORECASE)
DEFAULT_UNTIL = timedelta(hours=6)


def _offset(value: Any) -> timedelta:
    """Like a playbook duration, but `0m` (at the start) is allowed."""
    if isinstance(value, str) and re.fullmatch(r"0+[smhdw]?", value.strip()):
        return timedelta(0)
    return parse_duration(value)


Offset = Annotated[timedelta, BeforeValidator(_offset)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DecideEvent(_Strict):
    """The first `count` open tasks of a role (or the open task of one person) decide."""

    role: str | None = None
    person: str | None = None
    decision: Literal["approve", "reject"]
    count: int = Field(default=1, ge=1, le=50)
    comment: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.role is None) == (self.person is None):
            raise ValueError("give exactly one of `role` or `person`")
        return self

    def who(self) -> str:
        return f"role {self.role}" if self.role is not None else f"person {self.person}"


class DelegateEvent(_Strict):
    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)
    comment: str = Field(default="", max_length=2000)


class DraftEvent(_Strict):
    """A communicator submits a (new) version of an approval node's statement."""

    node: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=20000)
    by: str | None = None  # default: the person who opened the incident
    # a pre-approved library statement: `text` must be byte-identical to it
    library: str | None = Field(default=None, max_length=64)
    library_version: int | None = Field(default=None, ge=1)


class AwayEvent(_Strict):
    """Someone goes away (ill, travelling) from this moment for `for` (default: the rest
    of the run): from then on they are skipped like someone off-hours, through the same
    time-off overlay the API sets (`PUT /directory/people/{id}/away`)."""

    person: str = Field(min_length=1, max_length=64)
    for_: Duration | None = Field(default=None, alias="for")
    reason: str = Field(default="", max_length=200)


class ConfirmPublishEvent(_Strict):
    """The second person of a two-person publish confirms it."""

    step: str = Field(min_length=1, max_length=64)
    by: str


class StatusUpdateEvent(_Strict):
    message: str = Field(min_length=1, max_length=4000)
    actor: str | None = None  # default: the person who opened the incident


class ResolveEvent(_Strict):
    summary: str = Field(min_length=1, max_length=4000)
    actor: str | None = None


EVENT_KINDS = ("decide", "delegate", "status_update", "resolve", "draft", "confirm_publish",
               "away")


class Event(_Strict):
    at: Offset
    decide: DecideEvent | None = None
    delegate: DelegateEvent | None = None
    status_update: StatusUpdateEvent | None = None
    resolve: ResolveEvent | None = None
    draft: DraftEvent | None = None
    confirm_publish: ConfirmPublishEvent | None = None
    away: AwayEvent | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in EVENT_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"an event needs exactly one of {', '.join(EVENT_KINDS)} "
                             f"(got {', '.join(given) or 'none'})")
        return self

    def describe(self) -> str:
        if self.decide is not None:
            count = f" x{self.decide.count}" if self.decide.count > 1 else ""
            return f"{self.decide.decision} by {self.decide.who()}{count}"
        if self.delegate is not None:
            return f"delegate from {self.delegate.from_} to {self.delegate.to}"
        if self.status_update is not None:
            return "status update"
        if self.draft is not None:
            return f"draft for {self.draft.node}"
        if self.confirm_publish is not None:
            return f"publish confirmed by {self.confirm_publish.by}"
        if self.away is not None:
            return f"{self.away.person} away"
        return "resolve"


class IncidentSpec(_Strict):
    title: str = Field(min_length=1, max_length=200)
    severity: Severity
    summary: str | None = Field(default=None, max_length=4000)
    source_url: str | None = Field(default=None, max_length=2000)
    opened_by: str | None = None  # default: the first communicator of the directory


class Scenario(_Strict):
    playbook: str | None = None
    start: str | None = None
    incident: IncidentSpec
    events: list[Event] = Field(default_factory=list)
    until: Duration = DEFAULT_UNTIL

    def virtual_start(self, now: datetime) -> datetime:
        """When the incident opens; `now` is the simulation clock."""
        if self.start is None:
            return next_weekday_morning(now)
        return parse_start(self.start, now)


def next_weekday_morning(now: datetime) -> datetime:
    """The next Monday-to-Friday 10:00 UTC strictly after `now` (plus a minute of slack)."""
    utc = now.astimezone(ZoneInfo("UTC"))
    candidate = utc.replace(hour=10, minute=0, second=0, microsecond=0)
    while candidate <= utc + timedelta(minutes=1) or candidate.weekday() >= 5:
        candidate += timedelta(days=1)
    return candidate


def parse_start(text: str, now: datetime) -> datetime:
    """`fri 17:40 America/New_York` (the next such time after `now`) or an ISO time."""
    match = _RELATIVE_START.match(text.strip())
    if match is not None:
        zone_name = match["tz"] or "UTC"
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"start: unknown time zone {zone_name!r}") from None
        hh, mm = int(match["hh"]), int(match["mm"])
        if hh > 23 or mm > 59:
            raise ValueError(f"start: invalid time {hh}:{mm:02d}")
        local_now = now.astimezone(zone)
        day = local_now.date() + timedelta(
            days=(WEEKDAYS.index(match["day"].lower()) - local_now.weekday()) % 7)
        target = datetime.combine(day, time(hh, mm), tzinfo=zone)
        if target <= now + timedelta(minutes=1):
            target += timedelta(days=7)
        return target
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"start: {text!r} is neither an ISO time nor a form such as "
                         "'fri 17:40 America/New_York'") from None
    if moment.tzinfo is None:
        raise ValueError(f"start: {text!r} needs a time zone offset, e.g. +00:00")
    return moment


def scenario_issues(scenario: Scenario, directory: Directory) -> list[PlaybookIssue]:
    """What the schema can't see alone: time order, the start, people and roles."""
    issues: list[PlaybookIssue] = []
    if scenario.start is not None:
        try:
            parse_start(scenario.start, datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC")))
        except ValueError as exc:
            issues.append(PlaybookIssue("start", str(exc).removeprefix("start: ")))
    people = [p.id for p in directory.people]
    roles = {r.id for r in directory.roles} | {r for p in directory.people for r in p.roles}

    def person(path: str, person_id: str | None) -> None:
        if person_id is not None and not directory.has_person(person_id):
            issues.append(PlaybookIssue(path, f"unknown person {person_id!r}"
                                        + did_you_mean(person_id, people)))

    person("incident.opened_by", scenario.incident.opened_by)
    last = timedelta(0)
    for index, event in enumerate(scenario.events):
        here = f"events[{index}]"
        if event.at < last:
            issues.append(PlaybookIssue(f"{here}.at", "events must be in time order: "
                                        f"{format_duration(event.at)} is before the previous "
                                        f"event at {format_duration(last)}"))
        last = max(last, event.at)
        if event.at > scenario.until:
            issues.append(PlaybookIssue(f"{here}.at", "after `until` "
                                        f"({format_duration(scenario.until)}): it would never run"))
        if event.decide is not None:
            person(f"{here}.decide.person", event.decide.person)
            role = event.decide.role
            if role is not None and role not in roles:
                issues.append(PlaybookIssue(f"{here}.decide.role", f"unknown role {role!r}"
                                            + did_you_mean(role, roles)))
        if event.delegate is not None:
            person(f"{here}.delegate.from", event.delegate.from_)
            person(f"{here}.delegate.to", event.delegate.to)
        for name, update in (("status_update", event.status_update), ("resolve", event.resolve)):
            if update is not None:
                person(f"{here}.{name}.actor", update.actor)
        if event.draft is not None:
            person(f"{here}.draft.by", event.draft.by)
        if event.confirm_publish is not None:
            person(f"{here}.confirm_publish.by", event.confirm_publish.by)
        if event.away is not None:
            person(f"{here}.away.person", event.away.person)
    return issues


def parse_scenario(data: Any, directory: Directory, source: str) -> Scenario:
    return validate_with_paths(Scenario, data, source, lambda s: scenario_issues(s, directory))


def load_scenario(path: Path, directory: Directory) -> Scenario:
    """Read and validate a scenario file; PlaybookInvalid lists every issue with its path."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PlaybookInvalid([PlaybookIssue("(top)", f"cannot read file: {exc.strerror}")],
                              str(path)) from None
    return parse_scenario(parse_yaml(raw, str(path)), directory, str(path))
