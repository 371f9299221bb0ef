"""`/ui/away`: a person's own time away (on a plane, ill, on leave), from the browser.

While a period holds, new tasks for the person go to their role's on-call stand-in, and
running incidents learn each change at once (`domain.time_off`). The page lists the
person's away periods with a remove button each and adds one at a time; times are typed in
the person's own time zone (the directory's `timezone`). Every change goes through the same
route function as `PUT /directory/people/{id}/away`, so the rules (a person sets only their
own periods; admins use the API for others) live in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from domain.directory import Period

from ..auth import Principal
from ..errors import ApiError
from ..routes import directory as directory_routes
from .pages import error_page, field_errors, page_user, render, services_of

router = APIRouter(prefix="/ui/away", include_in_schema=False)

LOCAL_FORMAT = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> sends


def zone_of(request: Request, user: Principal) -> ZoneInfo:
    directory = services_of(request).registry.directory
    return ZoneInfo(directory.person(user.id).timezone if directory.has_person(user.id)
                    else "UTC")


def local_time(text: str, zone: ZoneInfo, field: str) -> datetime:
    """A datetime-local value, read in the person's time zone."""
    try:
        return datetime.strptime(text.strip(), LOCAL_FORMAT).replace(tzinfo=zone)
    except ValueError:
        raise FieldProblem(field, "give a date and a time, e.g. 2026-12-24 09:00") from None


class FieldProblem(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message


async def _own_periods(request: Request, user: Principal) -> list[Period]:
    out = await directory_routes.get_time_off(user, services_of(request))
    return list(out.overlay.away.get(user.id, []))


async def _page(request: Request, user: Principal, *, status_code: int = 200,
                form: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                saved: str = "") -> HTMLResponse:
    zone = zone_of(request, user)
    now = datetime.now(UTC).astimezone(zone)
    periods = await _own_periods(request, user)
    rows: list[dict[str, Any]] = [
        {"period": p, "start": p.start.astimezone(zone), "end": p.end.astimezone(zone),
         "now": p.contains(datetime.now(UTC))} for p in periods]
    default = {"start": now.strftime(LOCAL_FORMAT),
               "end": (now + timedelta(days=1)).strftime(LOCAL_FORMAT), "reason": ""}
    return render(request, "away.html", user, status_code=status_code, rows=rows,
                  zone=zone.key, form=form or default, errors=errors or {}, saved=saved)


@router.get("", response_class=HTMLResponse)
async def away_page(request: Request, saved: str = "") -> HTMLResponse:
    user = await page_user(request)
    return await _page(request, user, saved=saved[:40])


async def _replace(request: Request, user: Principal, periods: list[Period]) -> None:
    await directory_routes.set_away(
        user.id, directory_routes.AwayBody(periods=periods), user, services_of(request))


@router.post("", response_model=None)
async def add_period(request: Request, start: Annotated[str, Form(max_length=40)] = "",
                     end: Annotated[str, Form(max_length=40)] = "",
                     reason: Annotated[str, Form(max_length=400)] = "") -> Response:
    user = await page_user(request)
    form = {"start": start, "end": end, "reason": reason}
    zone = zone_of(request, user)
    try:
        begins, ends = local_time(start, zone, "start"), local_time(end, zone, "end")
        if ends <= begins:
            raise FieldProblem("end", "the end must come after the start")
        if ends <= datetime.now(UTC):
            raise FieldProblem("end", "this period has already ended")
        period = Period(start=begins, end=ends, reason=reason.strip())
        await _replace(request, user, [*await _own_periods(request, user), period])
    except FieldProblem as exc:
        return await _page(request, user, status_code=422, form=form,
                           errors={exc.field: exc.message})
    except ValidationError as exc:  # e.g. a reason too long, or too many periods at once
        shown = ("start", "end", "reason")
        problems = field_errors(exc)
        errors = {k: v for k, v in problems.items() if k in shown}
        rest = [v for k, v in problems.items() if k not in shown]
        if rest:
            errors["form"] = "; ".join(rest)
        return await _page(request, user, status_code=422, form=form, errors=errors)
    except ApiError as exc:
        return error_page(request, user, exc)
    return RedirectResponse("/ui/away?saved=added", status_code=303)


@router.post("/remove", response_model=None)
async def remove_period(request: Request, start: Annotated[str, Form(max_length=60)] = "",
                        end: Annotated[str, Form(max_length=60)] = "") -> Response:
    user = await page_user(request)
    periods = await _own_periods(request, user)
    kept = [p for p in periods if (p.start.isoformat(), p.end.isoformat()) != (start, end)]
    if len(kept) == len(periods):  # removed meanwhile (another tab): nothing to do
        return RedirectResponse("/ui/away?saved=gone", status_code=303)
    try:
        await _replace(request, user, kept)
    except ApiError as exc:
        return error_page(request, user, exc)
    return RedirectResponse("/ui/away?saved=removed", status_code=303)
