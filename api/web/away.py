"""`/ui/away`: a person's own time away (on a plane, ill, on leave), from the browser.

While a period holds, new tasks for the person go to their role's on-call stand-in, and
running incidents learn each change at once (`domain.time_off`). The page lists the
person's away periods with a remove button each and adds one at a time; times are typed in
the person's own time zone (the directory's `timezone`). Admins also pick anyone who may be
reached (`?person=<id>`: "Lena is on leave, I'm setting it for her"). Every change goes
through the same route function as `PUT /directory/people/{id}/away`, so the rules (a person
sets only their own periods, admins anyone's) live in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from domain.directory import Period
from domain.incident_directory import carried_by_incidents

from ..auth import PLAYBOOK_ADMINS, Principal
from ..errors import ApiError
from ..routes import directory as directory_routes
from .pages import error_page, form_errors, page_user, render, services_of

router = APIRouter(prefix="/ui/away", include_in_schema=False)

LOCAL_FORMAT = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> sends


def zone_of(request: Request, person_id: str) -> ZoneInfo:
    person = services_of(request).registry.person(person_id)
    return ZoneInfo(person.timezone if person is not None else "UTC")


def _whose(request: Request, user: Principal, person: str) -> str:
    """The person whose time away the page shows: the user, or (admins) anyone known."""
    whose = person or user.id
    directory_routes.require_away_setter(services_of(request), user, whose)
    return whose


def _back(person: str, user: Principal, saved: str) -> RedirectResponse:
    query = f"saved={saved}" + (f"&person={person}" if person != user.id else "")
    return RedirectResponse(f"/ui/away?{query}", status_code=303)


def local_time(text: str, zone: ZoneInfo, field: str) -> datetime:
    """A datetime-local value, read in the person's time zone."""
    try:
        return datetime.strptime(text.strip(), LOCAL_FORMAT).replace(tzinfo=zone)
    except ValueError:
        raise FieldProblem(field, "give a date and a time, e.g. 2026-12-24 09:00") from None


class FieldProblem(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message


async def _periods(request: Request, user: Principal, person: str) -> list[Period]:
    out = await directory_routes.get_time_off(user, services_of(request))
    return list(out.overlay.away.get(person, []))


async def _page(request: Request, user: Principal, person: str, *, status_code: int = 200,
                form: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                saved: str = "") -> HTMLResponse:
    zone = zone_of(request, person)
    now = datetime.now(UTC).astimezone(zone)
    periods = await _periods(request, user, person)
    directory = services_of(request).registry.directory
    people = ([p for p in directory.people if carried_by_incidents(directory, p)]
              if user.has_any(PLAYBOOK_ADMINS) else [])
    rows: list[dict[str, Any]] = [
        {"period": p, "start": p.start.astimezone(zone), "end": p.end.astimezone(zone),
         "now": p.contains(datetime.now(UTC))} for p in periods]
    default = {"start": now.strftime(LOCAL_FORMAT),
               "end": (now + timedelta(days=1)).strftime(LOCAL_FORMAT), "reason": ""}
    return render(request, "away.html", user, status_code=status_code, rows=rows,
                  zone=zone.key, form=form or default, errors=errors or {}, saved=saved,
                  person=person, people=people)


@router.get("", response_class=HTMLResponse)
async def away_page(request: Request, saved: str = "",
                    person: Annotated[str, Query(max_length=64)] = "") -> HTMLResponse:
    user = await page_user(request)
    try:
        whose = _whose(request, user, person)
    except ApiError as exc:
        return error_page(request, user, exc)
    return await _page(request, user, whose, saved=saved[:40])


async def _replace(request: Request, user: Principal, person: str,
                   periods: list[Period]) -> None:
    await directory_routes.set_away(
        person, directory_routes.AwayBody(periods=periods), user, services_of(request))


@router.post("", response_model=None)
async def add_period(request: Request, start: Annotated[str, Form(max_length=40)] = "",
                     end: Annotated[str, Form(max_length=40)] = "",
                     reason: Annotated[str, Form(max_length=400)] = "",
                     person: Annotated[str, Form(max_length=64)] = "") -> Response:
    user = await page_user(request)
    try:
        whose = _whose(request, user, person)
    except ApiError as exc:
        return error_page(request, user, exc)
    form = {"start": start, "end": end, "reason": reason}
    zone = zone_of(request, whose)
    try:
        begins, ends = local_time(start, zone, "start"), local_time(end, zone, "end")
        if ends <= begins:
            raise FieldProblem("end", "the end must come after the start")
        if ends <= datetime.now(UTC):
            raise FieldProblem("end", "this period has already ended")
        period = Period(start=begins, end=ends, reason=reason.strip())
        await _replace(request, user, whose, [*await _periods(request, user, whose), period])
    except FieldProblem as exc:
        return await _page(request, user, whose, status_code=422, form=form,
                           errors={exc.field: exc.message})
    except ValidationError as exc:  # e.g. a reason too long, or too many periods at once
        errors = form_errors(exc, ("start", "end", "reason"))
        return await _page(request, user, whose, status_code=422, form=form, errors=errors)
    except ApiError as exc:
        return error_page(request, user, exc)
    return _back(whose, user, "added")


@router.post("/remove", response_model=None)
async def remove_period(request: Request, start: Annotated[str, Form(max_length=60)] = "",
                        end: Annotated[str, Form(max_length=60)] = "",
                        person: Annotated[str, Form(max_length=64)] = "") -> Response:
    user = await page_user(request)
    try:
        whose = _whose(request, user, person)
    except ApiError as exc:
        return error_page(request, user, exc)
    periods = await _periods(request, user, whose)
    kept = [p for p in periods if (p.start.isoformat(), p.end.isoformat()) != (start, end)]
    if len(kept) == len(periods):  # removed meanwhile (another tab): nothing to do
        return _back(whose, user, "gone")
    try:
        await _replace(request, user, whose, kept)
    except ApiError as exc:
        return error_page(request, user, exc)
    return _back(whose, user, "removed")
