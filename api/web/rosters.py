"""`/ui/rosters`: who is on call now, and the admins' temporary roster overrides.

"Leo covers legal on-call this weekend" at 2 a.m. should not need curl. The page shows each
roster's members, who answers for it now (its overrides and rotation, skipping people who
are away: `Directory.on_call` on the directory with the time-off overlay applied), the
overrides reviewed into the directory (read-only), and the overrides set through the API,
each with a remove button. One form adds an override; times are typed in the admin's own
time zone. Every change goes through the route function of
`PUT /directory/rosters/{id}/overrides`, so the rules (admins only; the stand-in must be
someone incidents carry) live in one place, and running incidents learn each change at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from domain.directory import Directory, RosterOverride, TimeOff
from domain.incident_directory import carried_by_incidents

from ..auth import PLAYBOOK_ADMINS, Principal
from ..errors import ApiError
from ..routes import directory as directory_routes
from .away import LOCAL_FORMAT, FieldProblem, local_time, zone_of
from .pages import error_page, form_errors, page_user, render, services_of

router = APIRouter(prefix="/ui/rosters", include_in_schema=False)

SAVED = {"added": "Saved: the override applies now, in running incidents too.",
         "removed": "Removed: the rotation answers again.",
         "gone": "That override was already removed."}


def _refusal(request: Request, user: Principal) -> HTMLResponse | None:
    """The 403 page for someone who is not an admin (None for an admin)."""
    try:
        user.require(PLAYBOOK_ADMINS, "Roster overrides")
    except ApiError as exc:
        return error_page(request, user, exc)
    return None


async def _overlay(request: Request, user: Principal) -> TimeOff:
    return (await directory_routes.get_time_off(user, services_of(request))).overlay


def _rows(directory: Directory, overlay: TimeOff, now: datetime) -> list[dict[str, Any]]:
    applied = overlay.apply(directory)
    rows = []
    for roster in directory.rosters:
        on_call = applied.on_call(roster.id, now)
        covering = next((o for o in applied.roster(roster.id).overrides if o.contains(now)),
                        None)
        rows.append({"roster": roster, "on_call": on_call,
                     "by_override": covering is not None and covering.member == on_call,
                     "reviewed": roster.overrides,
                     "overrides": overlay.overrides.get(roster.id, [])})
    return rows


async def _page(request: Request, user: Principal, *, status_code: int = 200,
                form: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                saved: str = "") -> HTMLResponse:
    directory = services_of(request).registry.directory
    zone = zone_of(request, user.id)
    now = datetime.now(UTC)
    local_now = now.astimezone(zone)
    default = {"roster": directory.rosters[0].id if directory.rosters else "", "member": "",
               "start": local_now.strftime(LOCAL_FORMAT),
               "end": (local_now + timedelta(days=1)).strftime(LOCAL_FORMAT), "reason": ""}
    stand_ins = [p for p in directory.people if carried_by_incidents(directory, p)]
    return render(request, "rosters.html", user, status_code=status_code,
                  rows=_rows(directory, await _overlay(request, user), now), zone=zone,
                  stand_ins=stand_ins, form=form or default, errors=errors or {},
                  saved=SAVED.get(saved, ""))


@router.get("", response_class=HTMLResponse)
async def rosters_page(request: Request, saved: str = "") -> Response:
    user = await page_user(request)
    if (refused := _refusal(request, user)) is not None:
        return refused
    return await _page(request, user, saved=saved[:20])


async def _replace(request: Request, user: Principal, roster_id: str,
                   overrides: list[RosterOverride]) -> None:
    await directory_routes.set_overrides(
        roster_id, directory_routes.OverridesBody(overrides=overrides), user,
        services_of(request))


@router.post("", response_model=None)
async def add_override(request: Request, roster: Annotated[str, Form(max_length=64)] = "",
                       member: Annotated[str, Form(max_length=64)] = "",
                       start: Annotated[str, Form(max_length=40)] = "",
                       end: Annotated[str, Form(max_length=40)] = "",
                       reason: Annotated[str, Form(max_length=400)] = "") -> Response:
    user = await page_user(request)
    if (refused := _refusal(request, user)) is not None:
        return refused
    form = {"roster": roster, "member": member, "start": start, "end": end, "reason": reason}
    zone = zone_of(request, user.id)
    try:
        if not member:
            raise FieldProblem("member", "choose who stands in")
        begins, ends = local_time(start, zone, "start"), local_time(end, zone, "end")
        if ends <= begins:
            raise FieldProblem("end", "the end must come after the start")
        if ends <= datetime.now(UTC):
            raise FieldProblem("end", "this override has already ended")
        cover = RosterOverride(start=begins, end=ends, reason=reason.strip(), member=member)
        current = (await _overlay(request, user)).overrides.get(roster, [])
        await _replace(request, user, roster, [*current, cover])
    except FieldProblem as exc:
        return await _page(request, user, status_code=422, form=form,
                           errors={exc.field: exc.message})
    except ValidationError as exc:  # e.g. a reason too long, or too many overrides at once
        return await _page(request, user, status_code=422, form=form,
                           errors=form_errors(exc, ("member", "start", "end", "reason")))
    except RequestValidationError as exc:  # the route's word on the stand-in
        return await _page(request, user, status_code=422, form=form, errors={
            "member": "; ".join(str(e["msg"]) for e in exc.errors())})
    except ApiError as exc:  # e.g. a roster removed from the directory meanwhile
        return error_page(request, user, exc)
    return RedirectResponse("/ui/rosters?saved=added", status_code=303)


@router.post("/remove", response_model=None)
async def remove_override(request: Request, roster: Annotated[str, Form(max_length=64)] = "",
                          member: Annotated[str, Form(max_length=64)] = "",
                          start: Annotated[str, Form(max_length=60)] = "",
                          end: Annotated[str, Form(max_length=60)] = "") -> Response:
    user = await page_user(request)
    if (refused := _refusal(request, user)) is not None:
        return refused
    current = (await _overlay(request, user)).overrides.get(roster, [])
    kept = [o for o in current
            if (o.member, o.start.isoformat(), o.end.isoformat()) != (member, start, end)]
    if len(kept) == len(current):  # removed meanwhile (another tab): nothing to do
        return RedirectResponse("/ui/rosters?saved=gone", status_code=303)
    try:
        await _replace(request, user, roster, kept)
    except ApiError as exc:
        return error_page(request, user, exc)
    return RedirectResponse("/ui/rosters?saved=removed", status_code=303)
