"""Time off and roster overrides set through the API: an operational overlay, not policy.

Why not through the directory's change review (issue 12): a review takes hours and two
people; "Leo covers legal on-call this weekend" or "Lena is ill today" must hold the moment
it is said, or the 02:00 page goes to the wrong person. So the overlay applies at once, and
is accountable instead: every change has a revision, an author and a time
(`TimeOff.changes`), and each incident records the revision it applied on its timeline.
Who may set what: admins anything; a person their own away periods. The reviewed directory
keeps its own `away`/`overrides` (pinned in each incident's snapshot); the overlay adds to
them and is live: running incidents are told of every revision (signal `time_off`), read it
from the overlay's workflow (`ReadTimeOff`), and use it the next time they resolve who to
reach. The state lives in `TimeOffWorkflow` (Temporal is
the source of truth; nothing here is only in Redis).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from domain.directory import IDENT_PATTERN, Period, RosterOverride, TimeOff, TimeOffChange

MAX_CHANGES = 200  # audit entries kept in the overlay itself (oldest dropped first)
KEEP_ENDED = timedelta(days=7)  # ended periods are dropped a week after they end
MAX_PERIODS = 100


class SetAway(BaseModel):
    """Replace a person's API-set away periods (an empty list clears them)."""

    actor: str = Field(min_length=1, max_length=64)
    admin: bool = False  # the API checked the actor is an admin
    person_id: str = Field(pattern=IDENT_PATTERN)
    periods: list[Period] = Field(max_length=MAX_PERIODS)


class SetOverrides(BaseModel):
    """Replace a roster's API-set overrides (an empty list clears them). Admins only."""

    actor: str = Field(min_length=1, max_length=64)
    admin: bool = False
    roster_id: str = Field(pattern=IDENT_PATTERN)
    overrides: list[RosterOverride] = Field(max_length=MAX_PERIODS)


class TimeOffStart(BaseModel):
    overlay: TimeOff = Field(default_factory=TimeOff)
    continue_as_new_after_events: int = 2000


TIME_OFF_READ_ACTIVITY = "time_off_read"  # activities/time_off_reader.py


def time_off_id(task_queue: str) -> str:
    """The workflow id of the overlay of the incidents on `task_queue`."""
    return f"time-off-{task_queue}"


class ReadTimeOff(BaseModel):
    """An incident told of a new overlay (signal `time_off`) reads it from the `TimeOff`
    workflow at `workflow_id`, whose changes are signed updates, never from the signal:
    signals carry no signature, so a signal is only its sender's word."""

    workflow_id: str


class TimeOffRead(BaseModel):
    overlay: TimeOff | None = None  # None: no such workflow, or not a `TimeOff` one


class TimeOffRefused(ValueError):
    """A change the caller may not make (the API answers 403)."""


def check(req: SetAway | SetOverrides) -> None:
    if isinstance(req, SetOverrides) and not req.admin:
        raise TimeOffRefused("only an admin may change roster overrides")
    if isinstance(req, SetAway) and not req.admin and req.actor != req.person_id:
        raise TimeOffRefused(f"{req.actor} may set only their own away periods, "
                             f"not {req.person_id}'s")


def change(overlay: TimeOff, req: SetAway | SetOverrides, at: datetime) -> TimeOff:
    """The next revision of the overlay with `req` applied; ended periods pruned."""
    check(req)
    away = {k: [p for p in v if p.end > at - KEEP_ENDED] for k, v in overlay.away.items()}
    overrides = {k: [o for o in v if o.end > at - KEEP_ENDED]
                 for k, v in overlay.overrides.items()}
    if isinstance(req, SetAway):
        away[req.person_id] = sorted(req.periods, key=lambda p: p.start)
        what = f"away {req.person_id}: {len(req.periods)} period(s)"
    else:
        overrides[req.roster_id] = sorted(req.overrides, key=lambda o: o.start)
        what = f"overrides {req.roster_id}: {len(req.overrides)} override(s)"
    revision = overlay.revision + 1
    changes = [*overlay.changes, TimeOffChange(revision=revision, at=at, actor=req.actor,
                                               what=what)][-MAX_CHANGES:]
    return TimeOff(revision=revision,
                   away={k: v for k, v in away.items() if v},
                   overrides={k: v for k, v in overrides.items() if v},
                   changes=changes)
