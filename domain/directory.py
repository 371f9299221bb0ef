"""The directory of people: contact channels, roles, time zones, working hours, on-call rosters.

`resolve_targets` turns playbook targets (a person, a role, a roster) into the people to reach
*now*: someone outside their working hours is replaced by the on-call person of a roster, so a
crisis on Saturday at 02:00 still reaches someone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.durations import Duration

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Ident = str  # ids are validated by IDENT_PATTERN
IDENT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class AccessRole(StrEnum):
    """What a user may do through the API (roles work as scopes)."""

    reporter = "reporter"
    communicator = "communicator"
    approver = "approver"
    leader = "leader"
    admin = "admin"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkingHours(_Strict):
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS[:5]))
    start: time = time(9, 0)
    end: time = time(18, 0)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock_text(cls, value: object) -> object:
        # pydantic reads a number as seconds after midnight: 9 would silently mean 00:00:09.
        if isinstance(value, int | float):
            raise ValueError('write times as "HH:MM", e.g. "09:00"')
        if isinstance(value, str) and re.fullmatch(r"\d:\d\d(:\d\d)?", value.strip()):
            return "0" + value.strip()  # 8:30 -> 08:30
        return value

    @field_validator("start", "end")
    @classmethod
    def _wall_clock(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("working hours are local wall-clock times: set the person's "
                             "`timezone` instead of an offset")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> WorkingHours:
        if self.start == self.end:
            raise ValueError("working hours start and end must differ")
        if not self.days:
            raise ValueError("working hours need at least one day")
        return self

    def contains(self, local: datetime) -> bool:
        """True if the local wall-clock time falls inside these hours (end exclusive).

        Hours that cross midnight (22:00-06:00) belong to the day they start on.
        """
        now = local.time()
        today = WEEKDAYS[local.weekday()]
        if self.start < self.end:
            return today in self.days and self.start <= now < self.end
        yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
        return (today in self.days and now >= self.start) or (
            yesterday in self.days and now < self.end
        )


class Period(_Strict):
    """A span of time, [start, end), with UTC offsets (e.g. a vacation or a weekend)."""

    start: datetime
    end: datetime
    reason: str = Field(default="", max_length=200)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time_text(cls, value: object) -> object:
        # pydantic would read a number as Unix seconds: write the time out instead
        if isinstance(value, int | float):
            raise ValueError("write times as ISO 8601 with an offset, e.g. "
                             "2026-12-24T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("give start and end with a UTC offset, e.g. 2026-12-24T00:00:00Z")
        if self.end <= self.start:
            raise ValueError("a period must end after it starts")
        return self

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end


class RosterOverride(Period):
    """"Leo covers legal on-call this weekend": `member` is on call for the period."""

    member: Ident = Field(pattern=IDENT_PATTERN)


class Person(_Strict):
    id: Ident = Field(pattern=IDENT_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    # an absolute URL, or "/path" relative to CRISIS_PUBLIC_URL (the demo sink)
    webhook: str | None = Field(default=None, max_length=2000, pattern=r"^(https?://|/)")
    # Tags that select this person's services (Teams, SMS, PagerDuty, push...) in the Apprise
    # config file named by CRISIS_APPRISE_CONFIG. Only tags here: the secret-bearing URLs
    # stay in that file.
    apprise_tags: list[str] = Field(default_factory=list, max_length=20)
    roles: list[Ident] = Field(default_factory=list)
    access: list[AccessRole] = Field(default_factory=lambda: [AccessRole.reporter])
    timezone: str = "UTC"
    working_hours: WorkingHours | None = None  # None: reachable at any time
    # people who may carry this person's votes when they delegate (besides the role's
    # members and its on-call roster)
    deputies: list[Ident] = Field(default_factory=list)
    # time off (vacation, travel): skipped like someone outside their working hours
    away: list[Period] = Field(default_factory=list, max_length=100)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("apprise_tags")
    @classmethod
    def _tags_not_urls(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", tag):
                raise ValueError(f"Apprise tag {tag[:20]!r}... must be a name like 'lena-sms' "
                                 "(letters, digits, '-', '_', '.'); put URLs in the Apprise "
                                 "config file, never in the directory" if "://" in tag else
                                 f"invalid Apprise tag {tag!r}: use letters, digits, '-', "
                                 "'_' or '.'")
        return value

    def away_at(self, at: datetime) -> Period | None:
        return next((p for p in self.away if p.contains(at)), None)

    def available_at(self, at: datetime) -> bool:
        if self.away_at(at) is not None:
            return False
        if self.working_hours is None:
            return True
        return self.working_hours.contains(at.astimezone(ZoneInfo(self.timezone)))


class Role(_Strict):
    id: Ident = Field(pattern=IDENT_PATTERN)
    description: str = ""
    oncall: Ident | None = None  # roster that stands in for members outside their hours


class Roster(_Strict):
    """A rotation: `members[i]` is on call for `rotation` starting at `start + i * rotation`."""

    id: Ident = Field(pattern=IDENT_PATTERN)
    name: str = ""
    members: list[Ident] = Field(min_length=1)
    rotation: Duration = timedelta(weeks=1)
    start: datetime = datetime(2026, 1, 5, 9, 0, tzinfo=ZoneInfo("UTC"))
    overrides: list[RosterOverride] = Field(default_factory=list, max_length=100)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("roster start needs a UTC offset, e.g. 2026-01-05T09:00:00Z")
        return value

    def on_call(self, at: datetime) -> Ident:
        """Who is on call at `at`: an override covering `at` wins over the rotation."""
        override = next((o for o in self.overrides if o.contains(at)), None)
        if override is not None:
            return override.member
        shifts = int((at - self.start) // self.rotation)
        return self.members[shifts % len(self.members)]


class Directory(_Strict):
    people: list[Person] = Field(min_length=1)
    roles: list[Role] = Field(default_factory=list)
    rosters: list[Roster] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Directory:
        errors: list[str] = []
        kinds = (("person", self.people), ("role", self.roles), ("roster", self.rosters))
        for kind, items in kinds:
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    errors.append(f"duplicate {kind} id {item.id!r}")
                seen.add(item.id)
        people = {p.id for p in self.people}
        rosters = {r.id for r in self.rosters}
        roles = {r.id for r in self.roles}
        for person in self.people:
            errors += [f"person {person.id!r} has unknown role {r!r}" for r in person.roles
                       if r not in roles]
        for person in self.people:
            errors += [f"person {person.id!r} names unknown deputy {d!r}"
                       for d in person.deputies if d not in people]
        for roster in self.rosters:
            errors += [f"roster {roster.id!r} has unknown member {m!r}" for m in roster.members
                       if m not in people]
            errors += [f"roster {roster.id!r} override names unknown person {o.member!r}"
                       for o in roster.overrides if o.member not in people]
        for role in self.roles:
            if role.oncall is not None and role.oncall not in rosters:
                errors.append(f"role {role.id!r} names unknown on-call roster {role.oncall!r}")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def person(self, person_id: str) -> Person:
        for person in self.people:
            if person.id == person_id:
                return person
        raise KeyError(person_id)

    def has_person(self, person_id: str) -> bool:
        return any(p.id == person_id for p in self.people)

    def role(self, role_id: str) -> Role | None:
        return next((r for r in self.roles if r.id == role_id), None)

    def roster(self, roster_id: str) -> Roster:
        return next(r for r in self.rosters if r.id == roster_id)

    def members_of(self, role_id: str) -> list[Person]:
        return [p for p in self.people if role_id in p.roles]

    def on_call(self, roster_id: str, at: datetime, *, skip_away: bool = True) -> Ident:
        """Who answers for a roster at `at`: its override or rotation, unless that person is
        away (vacation, travel): then the next member of the rotation who is not. If every
        member is away, the rostered person (reaching someone beats reaching no one)."""
        roster = self.roster(roster_id)
        first = roster.on_call(at)
        if not skip_away or self.person(first).away_at(at) is None:
            return first
        members = roster.members
        start = members.index(first) if first in members else -1
        for step in range(1, len(members) + 1):
            candidate = members[(start + step) % len(members)]
            if self.person(candidate).away_at(at) is None:
                return candidate
        return first


class TimeOffChange(_Strict):
    """Who changed the time-off overlay, when, and what (for the audit trail)."""

    revision: int
    at: datetime
    actor: Ident
    what: str = Field(max_length=200)  # "away lena-legal" / "overrides legal-oncall"


class TimeOff(_Strict):
    """The operational overlay on the reviewed directory: away periods and roster
    overrides set through the API, applied at once (no review), each change recorded.

    The reviewed directory (pinned in every incident's snapshot) keeps its own `away` and
    `overrides`; this overlay adds to them. Running incidents receive every new revision and
    use it the next time they resolve who to reach."""

    revision: int = 0
    away: dict[Ident, list[Period]] = Field(default_factory=dict)
    overrides: dict[Ident, list[RosterOverride]] = Field(default_factory=dict)
    changes: list[TimeOffChange] = Field(default_factory=list)  # newest last, bounded

    def apply(self, directory: Directory) -> Directory:
        """`directory` with this overlay's periods added. Entries naming people or rosters
        the directory doesn't know (an incident pinned an older directory) are left out."""
        if not self.away and not self.overrides:
            return directory
        people = [p.model_copy(update={"away": [*p.away, *self.away.get(p.id, [])]})
                  if self.away.get(p.id) else p for p in directory.people]
        known = {p.id for p in directory.people}
        rosters = []
        for roster in directory.rosters:
            extra = [o for o in self.overrides.get(roster.id, []) if o.member in known]
            # the overlay's overrides come first: the newer, operational word wins
            rosters.append(roster.model_copy(update={"overrides": [*extra, *roster.overrides]})
                           if extra else roster)
        return directory.model_copy(update={"people": people, "rosters": rosters})


class Target(_Strict):
    """Who a notification or an approval goes to: exactly one of person, role or roster."""

    person: Ident | None = None
    role: Ident | None = None
    roster: Ident | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        given = [k for k in ("person", "role", "roster") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a target names exactly one of person, role or roster")
        return self

    def label(self) -> str:
        for key in ("person", "role", "roster"):
            value = getattr(self, key)
            if value is not None:
                return f"{key}:{value}"
        return "?"


AssignedVia = Literal["direct", "role", "roster", "oncall", "delegation", "reassignment"]


class Assignment(_Strict):
    """One person to reach, and why: `via` is direct, role, roster or on-call stand-in."""

    person_id: Ident
    role: Ident | None = None
    via: AssignedVia = "direct"
    replaces: Ident | None = None  # the off-hours person this on-call assignment stands in for


def _stand_in(
    directory: Directory, person: Person, role_id: str | None, at: datetime, skip_away: bool
) -> str | None:
    """The on-call person who covers `person` (off-hours) for `role_id`, if any roster does."""
    candidate_roles = [role_id] if role_id else list(person.roles)
    for rid in candidate_roles:
        role = directory.role(rid) if rid else None
        if role is not None and role.oncall is not None:
            return directory.on_call(role.oncall, at, skip_away=skip_away)
    return None


def resolve_targets(
    targets: list[Target], directory: Directory, at: datetime, *, respect_hours: bool = True,
    skip_away_on_call: bool = True, away_hands_over: Callable[[], bool] | None = None,
) -> list[Assignment]:
    """The people to reach for `targets` at `at`, one assignment per person, in target order.

    People outside their working hours are replaced by their role's on-call person. If no
    roster covers them they are kept: reaching someone off-hours beats reaching no one.

    `respect_hours=False` reaches people whatever the hour. Someone who marked themselves
    away (on a plane, ill) is still replaced if `away_hands_over()` says so: working hours
    say when a person is usually reachable, time away says they cannot act at all. It is a
    callable so that a workflow asks its patch only when the answer changes who is reached.
    """
    out: list[Assignment] = []
    seen: set[str] = set()

    def add(assignment: Assignment) -> None:
        if assignment.person_id not in seen:
            seen.add(assignment.person_id)
            out.append(assignment)

    for target in targets:
        if target.roster is not None:
            add(Assignment(person_id=directory.on_call(target.roster, at,
                                                       skip_away=skip_away_on_call),
                           via="roster"))
            continue
        if target.person is not None:
            people, role_id, via = [directory.person(target.person)], None, "direct"
        else:
            assert target.role is not None
            people, role_id, via = directory.members_of(target.role), target.role, "role"
        for person in people:
            counted_role = role_id or (person.roles[0] if person.roles else None)
            if person.available_at(at) or (not respect_hours and not (
                    away_hands_over is not None and person.away_at(at) is not None
                    and away_hands_over())):
                add(Assignment(person_id=person.id, role=counted_role, via=via))
                continue
            stand_in = _stand_in(directory, person, role_id, at, skip_away_on_call)
            if stand_in is None or stand_in == person.id:
                add(Assignment(person_id=person.id, role=counted_role, via=via))
            else:
                add(Assignment(person_id=stand_in, role=counted_role, via="oncall",
                               replaces=person.id))
    return out
