"""The web pages under `/ui/...`: stable URLs that notifications can link to.

Pages are Jinja2 templates; htmx swaps fragments in place, and the SSE extension re-reads a
fragment whenever `/events` or `/incidents/{id}/events` says something changed. Forms post
here; every state change goes through the same route functions as the JSON API (same
authorization, same workflow updates), so the pages add no business rules of their own.
Pages need a browser session (`api.web.sessions`): without one they redirect to the login.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path as FsPath
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlparse

from fastapi import APIRouter, FastAPI, Form, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from temporalio.client import WorkflowUpdateFailedError

from domain.directory import AccessRole
from domain.fleet import fleet_report
from domain.incident import IncidentStatus, IncidentView, Task, TaskState
from domain.ledger import unknown_actions
from domain.metrics import duration, incident_metrics
from domain.playbook import Severity

from .. import auth, lookup
from ..auth import Principal
from ..deps import Services, get_services, principal_for_token, session_of, session_user
from ..errors import ApiError, from_update_failure
from ..routes import actions as action_routes
from ..routes import drafts as draft_routes
from ..routes import incidents as incident_routes
from ..routes import leadership, review
from ..routes import reports as report_routes
from ..routes import tasks as task_routes
from ..schemas import (
    DecisionBody,
    DelegateBody,
    OpenIncidentRequest,
    ReportRequest,
    ResolveBody,
    StatusUpdateBody,
)
from . import present
from .sessions import COOKIE
from .views import (
    approval_of,
    draft_nodes,
    eligible_delegates,
    next_escalation,
    paused_posts,
    playbook_of,
    vetoes,
)

HERE = FsPath(__file__).resolve().parent
T = TypeVar("T")
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["duration"] = duration
templates.env.globals["quote"] = quote
templates.env.globals["diff_lines"] = present.diff_lines

router = APIRouter(prefix="/ui", include_in_schema=False)

TaskPath = Annotated[str, Path(pattern=task_routes.TASK_ID_PATTERN)]
IncidentPath = incident_routes.IncidentId


async def command(call: Awaitable[T]) -> T:
    """Run an API route function; a workflow's rejection becomes its ApiError."""
    try:
        return await call
    except WorkflowUpdateFailedError as exc:
        raise from_update_failure(exc) from None


async def delegation_chain(services: Services, first: Task) -> list[Task]:
    """The task and the tasks it was delegated on to, in order (bounded), for display."""
    chain = [first]
    while chain[-1].delegated_to is not None and len(chain) < 20:
        nxt = await lookup.task(services.read_model, services.temporal, chain[-1].delegated_to)
        if nxt is None or nxt in chain:
            break
        chain.append(nxt)
    return chain


class LoginNeeded(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


NAV = (  # (label, path, roles that see it)
    ("Board", "/ui/board", auth.INCIDENT_READERS),
    ("Inbox", "/ui/inbox", auth.INBOX_USERS),
    ("Dashboard", "/ui/dashboard", auth.INCIDENT_READERS),
    ("Report a signal", "/ui/report", frozenset({AccessRole.reporter})),
    ("Time away", "/ui/away", auth.INBOX_USERS),
    ("Rosters", "/ui/rosters", auth.PLAYBOOK_ADMINS),
)


def landing(user: Principal) -> str:
    """Each role's first page: a reporter lands on "report a signal"."""
    if user.has_any({AccessRole.communicator, AccessRole.admin}):
        return "/ui/board"
    if AccessRole.approver in user.access:
        return "/ui/inbox"
    if AccessRole.leader in user.access:
        return "/ui/dashboard"
    return "/ui/report"


def services_of(request: Request) -> Services:
    return get_services(request)


class PageProblem(Exception):
    """A request the page can't serve (e.g. a stale CSRF token): say so on the page."""

    def __init__(self, error: ApiError) -> None:
        self.error = error


async def page_user(request: Request) -> Principal:
    try:
        user = await session_user(request, services_of(request))
    except ApiError as exc:
        raise PageProblem(exc) from None
    if user is None:
        raise LoginNeeded(request.url.path + (f"?{request.url.query}" if request.url.query
                                              else ""))
    return user


def render(request: Request, name: str, user: Principal | None, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    services = services_of(request)
    session = getattr(request.state, "ce_session", None)
    base = {
        "user": user, "csrf": session.csrf if session is not None else "",
        "names": present.Names(services.registry.people_by_id()),
        "nav": [(label, path) for label, path, roles in NAV if user and user.has_any(roles)],
        "now": datetime.now(UTC), "path": request.url.path,
        "roles": sorted(r.value for r in user.access) if user else [],
    }
    return templates.TemplateResponse(request, name, {**base, **context},
                                      status_code=status_code)


def error_page(request: Request, user: Principal | None, error: ApiError) -> HTMLResponse:
    return render(request, "error.html", user, status_code=error.status_code,
                  status=error.status_code, detail=str(error.detail), code=error.code)


def field_errors(exc: ValidationError) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in exc.errors():
        loc = item.get("loc") or ("form",)
        out.setdefault(str(loc[0]), str(item["msg"]).removeprefix("Value error, "))
    return out


def form_errors(exc: ValidationError, shown: tuple[str, ...]) -> dict[str, str]:
    """Each problem under the form field it belongs to; the others together under "form"."""
    problems = field_errors(exc)
    errors = {k: v for k, v in problems.items() if k in shown}
    rest = [v for k, v in problems.items() if k not in shown]
    if rest:
        errors["form"] = "; ".join(rest)
    return errors


def feedback(request: Request, message: str, ok: bool = True,
             also: HTMLResponse | None = None) -> HTMLResponse:
    """A message that stays: appended to the page's feedback list, not swapped away.
    `also`: elements swapped in by id as well (`hx-swap-oob`), e.g. a form drawn afresh."""
    response = render(request, "_feedback.html", None, message=message, ok=ok)
    if also is not None:
        response = HTMLResponse(bytes(response.body) + bytes(also.body))
    response.headers["HX-Retarget"] = "#feedback"
    response.headers["HX-Reswap"] = "afterbegin"
    response.headers["HX-Trigger"] = "refresh"
    return response


def refused(request: Request, exc: ValidationError) -> HTMLResponse:
    """Bad input from buttons and short forms: each field's problem, as a feedback line."""
    return feedback(request, "; ".join(f"{k}: {v}" for k, v in field_errors(exc).items()),
                    ok=False)


# ---- login, logout, landing -----------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "") -> HTMLResponse:
    return render(request, "login.html", None, next=_safe_next(next), error=None)


def _safe_next(next_path: str) -> str:
    return next_path if next_path.startswith("/") and not next_path.startswith("//") else ""


@router.post("/login", response_model=None)
async def login(request: Request, token: Annotated[str, Form(max_length=500)] = "",
                next: Annotated[str, Form(max_length=2000)] = "") -> Response:
    services = services_of(request)
    origin = request.headers.get("origin")
    if origin and urlparse(origin).netloc != request.url.netloc:
        # login CSRF: another site must not sign this browser in as someone else
        return render(request, "login.html", None, status_code=403, next="",
                      error="Sign in from this site's own login page.")
    principal = principal_for_token(services, token.strip() or None)
    if principal is None:
        return render(request, "login.html", None, status_code=401, next=_safe_next(next),
                      error="That token is unknown or revoked.")
    cookie, _ = await services.sessions.start(principal.id)
    response = RedirectResponse(_safe_next(next) or landing(principal), status_code=303)
    response.set_cookie(COOKIE, cookie, max_age=services.sessions.ttl_seconds, httponly=True,
                        samesite="lax", secure=services.settings.cookie_secure, path="/")
    return response


@router.post("/logout", response_model=None)
async def logout(request: Request) -> Response:
    services = services_of(request)
    await session_user(request, services)  # CSRF-checked: a foreign site can't log you out
    await services.sessions.end(request.cookies.get(COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("", response_model=None)
async def home(request: Request) -> Response:
    user = await page_user(request)
    return RedirectResponse(landing(user), status_code=303)


# ---- report a signal (everyone) -------------------------------------------------------


@router.get("/report", response_class=HTMLResponse)
async def report_page(request: Request) -> HTMLResponse:
    user = await page_user(request)
    return render(request, "report.html", user, form={}, errors={}, receipt=None)


@router.post("/report", response_class=HTMLResponse)
async def report_submit(
    request: Request, summary: Annotated[str, Form()] = "",
    source_url: Annotated[str, Form()] = "", dedup_key: Annotated[str, Form()] = "",
    severity: Annotated[str, Form()] = "",
) -> HTMLResponse:
    user = await page_user(request)
    form = {"summary": summary, "source_url": source_url, "dedup_key": dedup_key,
            "severity": severity}
    try:
        body = ReportRequest(summary=summary, source_url=source_url or None,
                             dedup_key=dedup_key or None,
                             severity=Severity(severity) if severity else None)
    except (ValidationError, ValueError) as exc:
        errors = field_errors(exc) if isinstance(exc, ValidationError) else {
            "severity": "choose a severity"}
        return render(request, "report.html", user, status_code=422, form=form,
                      errors=errors, receipt=None)
    services = services_of(request)
    try:
        receipt = await command(report_routes.post_report(
            body, user, services.intake, Response(), None))
    except ApiError as exc:
        return render(request, "report.html", user, status_code=exc.status_code, form=form,
                      errors={"form": str(exc.detail)}, receipt=None)
    return render(request, "report.html", user, form={}, errors={}, receipt=receipt)


# ---- board ------------------------------------------------------------------------------


async def board_rows(services: Services) -> list[dict[str, Any]]:
    # the open-incidents index: the newest 100 open ones, however many were resolved since
    items, _ = await services.read_model.list_incidents(status=IncidentStatus.open, limit=100)
    now = datetime.now(UTC)
    names = present.Names(services.registry.people_by_id())
    rows = []
    for incident in items:
        if incident.status != "open":
            continue
        view = await services.read_model.incident_view(incident.id)
        playbook = playbook_of(services.registry, incident)
        pending = [n for n in (view.nodes if view else []) if n.outcome == "pending"]
        upcoming = [u for n in pending
                    if (u := next_escalation(n, approval_of(playbook, n.step_id)))]
        soonest = min(upcoming, key=lambda u: u.at) if upcoming else None
        rows.append({
            "incident": incident, "age": present.age(incident.opened_at, now),
            "nodes": [{"node": n, "waiting": present.waiting_on(n, view.tasks, names)}
                      for n in pending] if view else [],
            "next": soonest, "countdown": present.countdown(soonest.at if soonest else None,
                                                            now)})
    return rows


def playbook_choices(services: Services) -> list[dict[str, Any]]:
    return [{"id": p.id, "name": p.definition.name,
             "severities": [s.value for s in p.definition.severities]}
            for p in services.registry.all()]


@router.get("/board", response_class=HTMLResponse)
async def board(request: Request) -> HTMLResponse:
    user = await page_user(request)
    if not user.has_any(auth.INCIDENT_READERS):
        return error_page(request, user, ApiError(403, "The board is for communicators, "
                                                       "leaders and admins."))
    services = services_of(request)
    playbooks = playbook_choices(services)
    return render(request, "board.html", user, rows=await board_rows(services),
                  playbooks=playbooks, form={"playbook": playbooks[0]["id"] if playbooks else ""},
                  errors={}, can_open=user.has_any(auth.INCIDENT_WRITERS))


@router.get("/fragments/board", response_class=HTMLResponse)
async def board_fragment(request: Request) -> HTMLResponse:
    user = await page_user(request)
    if not user.has_any(auth.INCIDENT_READERS):
        return error_page(request, user, ApiError(403, "not for your role"))
    return render(request, "_board_rows.html", user, rows=await board_rows(services_of(request)))


@router.get("/fragments/severity", response_class=HTMLResponse)
async def severity_field(request: Request, playbook: str = "", severity: str = "") -> HTMLResponse:
    user = await page_user(request)
    services = services_of(request)
    choices = next((p for p in playbook_choices(services) if p["id"] == playbook), None)
    return render(request, "_severity.html", user, choices=choices["severities"] if choices
                  else [], selected=severity, errors={})


@router.post("/incidents", response_model=None)
async def open_incident(
    request: Request, title: Annotated[str, Form()] = "", summary: Annotated[str, Form()] = "",
    playbook: Annotated[str, Form()] = "", severity: Annotated[str, Form()] = "",
    source_url: Annotated[str, Form()] = "", dedup_key: Annotated[str, Form()] = "",
) -> Response:
    user = await page_user(request)
    services = services_of(request)
    form = {"title": title, "summary": summary, "playbook": playbook, "severity": severity,
            "source_url": source_url, "dedup_key": dedup_key}
    errors: dict[str, str] = {}
    body: OpenIncidentRequest | None = None
    choices = next((p for p in playbook_choices(services) if p["id"] == playbook), None)
    if choices is None:
        errors["playbook"] = "choose a playbook"
    elif severity not in choices["severities"]:
        errors["severity"] = (f"{choices['name']} handles "
                              f"{', '.join(choices['severities'])}")
    try:
        body = OpenIncidentRequest(title=title, summary=summary, playbook=playbook or "x",
                                   severity=severity or "high", source_url=source_url or None,
                                   dedup_key=dedup_key or None)
    except ValidationError as exc:
        errors = {**field_errors(exc), **errors}
    if body is not None and not errors:
        try:
            opened = await command(incident_routes.open_incident(
                body, user, services.intake, Response(), None))
        except ApiError as exc:
            errors["form"] = str(exc.detail)
        else:
            response = Response(status_code=204)
            response.headers["HX-Redirect"] = f"/ui/incidents/{opened.id}"
            return response
    return render(request, "_open_form.html", user, status_code=422,
                  playbooks=playbook_choices(services), form=form, errors=errors)


# ---- incident -----------------------------------------------------------------------------


async def incident_context(request: Request, user: Principal, incident_id: str
                           ) -> dict[str, Any]:
    services = services_of(request)
    view: IncidentView = await incident_routes.readable_view(
        user, services.read_model, services.temporal, incident_id)
    entries = sorted(await lookup.timeline(services.read_model, services.temporal, incident_id),
                     key=lambda e: e.seq)
    names = present.Names(services.registry.people_by_id())
    playbook = playbook_of(services.registry, view.incident)
    now = datetime.now(UTC)
    nodes = []
    for node in view.nodes:
        upcoming = next_escalation(node, approval_of(playbook, node.step_id))
        tasks = [t for t in view.tasks if t.node_id == node.step_id]
        drafts = list(dict.fromkeys(t.content for t in tasks))
        nodes.append({"node": node, "tasks": tasks, "next": upcoming,
                      "countdown": present.countdown(upcoming.at if upcoming else None, now),
                      "waiting": present.waiting_on(node, view.tasks, names),
                      "draft": drafts[-1] if drafts else None,
                      "previous_draft": _previous_draft(view, node.step_id)})
    titles = {n.step_id: n.title for n in view.nodes}
    timeline = [{"entry": e, "offset": present.offset(e.at, view.incident.opened_at),
                 "sentence": present.sentence(e, names, titles),
                 "raw": json.dumps(e.model_dump(mode="json"), indent=2, ensure_ascii=False)}
                for e in entries]
    return {"view": view, "incident": view.incident, "nodes": nodes, "timeline": timeline,
            "can_write": user.has_any(auth.INCIDENT_WRITERS) and view.incident.status == "open",
            "draft_nodes": draft_nodes(playbook, view),
            "unknown_actions": unknown_actions(entries), "paused": paused_posts(entries),
            "age": present.age(view.incident.opened_at, now)}


def _previous_draft(view: IncidentView, step_id: str) -> str | None:
    """The text of the approval node before this one, for a diff of what changed."""
    order = [n.step_id for n in view.nodes]
    index = order.index(step_id)
    for earlier in reversed(order[:index]):
        texts = [t.content for t in view.tasks if t.node_id == earlier]
        if texts:
            return texts[-1]
    return None


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
async def incident_page(request: Request, incident_id: IncidentPath) -> HTMLResponse:
    user = await page_user(request)
    try:
        context = await incident_context(request, user, incident_id)
    except ApiError as exc:
        return error_page(request, user, exc)
    return render(request, "incident.html", user, errors={}, **context)


@router.get("/fragments/incidents/{incident_id}", response_class=HTMLResponse)
async def incident_fragment(request: Request, incident_id: IncidentPath) -> HTMLResponse:
    user = await page_user(request)
    try:
        context = await incident_context(request, user, incident_id)
    except ApiError as exc:
        return error_page(request, user, exc)
    return render(request, "_incident_live.html", user, **context)


@router.post("/incidents/{incident_id}/status", response_class=HTMLResponse)
async def post_status(request: Request, incident_id: IncidentPath,
                      message: Annotated[str, Form()] = "") -> HTMLResponse:
    user = await page_user(request)
    services = services_of(request)
    try:
        body = StatusUpdateBody(message=message)
        user.require(auth.INCIDENT_WRITERS, "posting a status update")
        await command(incident_routes.post_status_update(incident_id, body, user,
                                                         services.temporal,
                                                         services.read_model))
    except ValidationError as exc:
        return render(request, "_status_form.html", user, status_code=422,
                      incident_id=incident_id, errors=field_errors(exc), form={"message": message})
    except ApiError as exc:
        return feedback(request, str(exc.detail), ok=False)
    return feedback(request, "Status update posted.")


@router.post("/incidents/{incident_id}/drafts", response_class=HTMLResponse)
async def post_draft(request: Request, incident_id: IncidentPath,
                     node: Annotated[str, Form()] = "", text: Annotated[str, Form()] = "",
                     link: Annotated[str, Form()] = "") -> HTMLResponse:
    """The next version of an approval node's text (`POST /incidents/{id}/drafts`): a new
    round that the node's approvers decide on exactly this text."""
    user = await page_user(request)
    services = services_of(request)
    form = {"node": node, "text": text, "link": link}
    try:
        body = draft_routes.DraftBody(node=node, text=text, link=link.strip() or None)
        user.require(auth.INCIDENT_WRITERS, "submitting a draft")
        result = await command(draft_routes.submit_draft(
            incident_id, body, user, services.temporal, services.read_model))
    except ValidationError as exc:
        return render(request, "_draft_form.html", user, status_code=422,
                      incident_id=incident_id, errors=field_errors(exc), form=form,
                      draft_nodes=await _draft_nodes(request, user, incident_id))
    except ApiError as exc:
        return feedback(request, str(exc.detail), ok=False)
    title = result.node.title if result.node is not None else node
    when = "its approvers decide it now" if result.tasks else "the node opens with it"
    fresh = render(request, "_draft_form.html", user, incident_id=incident_id, errors={},
                   form={"node": node}, oob=True,
                   draft_nodes=await _draft_nodes(request, user, incident_id))
    return feedback(request, f"Draft v{result.draft.version} of “{title}” submitted: {when}.",
                    also=fresh)


async def _draft_nodes(request: Request, user: Principal, incident_id: str) -> list[Any]:
    """The form's node choices again (a refused form is drawn anew with its errors)."""
    try:
        return list((await incident_context(request, user, incident_id))["draft_nodes"])
    except ApiError:
        return []


@router.post("/incidents/{incident_id}/actions/{step_id}/resolve-unknown",
             response_class=HTMLResponse)
async def post_resolve_unknown(request: Request, incident_id: IncidentPath,
                               step_id: action_routes.StepId,
                               outcome: Annotated[str, Form()] = "",
                               comment: Annotated[str, Form()] = "") -> HTMLResponse:
    """A communicator says whether an at-most-once action whose outcome is unknown went
    out (`sent`) or must go once more (`resend`)."""
    user = await page_user(request)
    services = services_of(request)
    try:
        body = action_routes.ResolveUnknownBody.model_validate(
            {"outcome": outcome, "comment": comment})
        user.require(auth.INCIDENT_WRITERS, "answering for an action")
        await command(action_routes.resolve_unknown_action(
            incident_id, step_id, body, user, services.temporal, services.read_model))
    except ValidationError as exc:
        return refused(request, exc)
    except ApiError as exc:
        return feedback(request, str(exc.detail), ok=False)
    said = "it was sent: the step is done" if body.outcome == "sent" \
        else "send it again: it goes out once more"
    return feedback(request, f"Action {step_id}: {said}.")


@router.post("/incidents/{incident_id}/keep-paused", response_class=HTMLResponse)
async def post_keep_paused(request: Request, incident_id: IncidentPath,
                           keep: Annotated[str, Form()] = "true",
                           reason: Annotated[str, Form()] = "") -> HTMLResponse:
    """Keep the scheduled posts a playbook action paused paused when the incident
    resolves (`keep=true`), or let them resume again (`keep=false`)."""
    user = await page_user(request)
    services = services_of(request)
    try:
        body = draft_routes.KeepPausedBody.model_validate(
            {"keep": keep == "true", "reason": reason})
        user.require(auth.INCIDENT_WRITERS, "keeping posts paused")
        await command(draft_routes.keep_posts_paused(
            incident_id, body, user, services.temporal, services.read_model))
    except ValidationError as exc:
        return refused(request, exc)
    except ApiError as exc:
        return feedback(request, str(exc.detail), ok=False)
    return feedback(request, "Scheduled posts stay paused after resolution." if body.keep
                    else "Scheduled posts resume when the incident resolves.")


@router.post("/incidents/{incident_id}/resolve", response_class=HTMLResponse)
async def post_resolve(request: Request, incident_id: IncidentPath,
                       summary: Annotated[str, Form()] = "") -> HTMLResponse:
    user = await page_user(request)
    services = services_of(request)
    try:
        body = ResolveBody(summary=summary)
        user.require(auth.INCIDENT_WRITERS, "resolving")
        await command(incident_routes.resolve_incident(incident_id, body, user,
                                                       services.temporal,
                                                       services.read_model,
                                                       intake=services.intake))
    except ValidationError as exc:
        return render(request, "_resolve_form.html", user, status_code=422,
                      incident_id=incident_id, errors=field_errors(exc), form={"summary": summary})
    except ApiError as exc:
        return feedback(request, str(exc.detail), ok=False)
    return feedback(request, "Incident resolved.")


# ---- tasks and inbox ------------------------------------------------------------------------


async def task_card(services: Services, task: Task, user: Principal) -> dict[str, Any]:
    incident = await services.read_model.incident(task.incident_id)
    view = await services.read_model.incident_view(task.incident_id)
    playbook = playbook_of(services.registry, incident) if incident else None
    approval = approval_of(playbook, task.node_id)
    node = next((n for n in view.nodes if n.step_id == task.node_id), None) if view else None
    upcoming = next_escalation(node, approval) if node else None
    now = datetime.now(UTC)
    chain = await delegation_chain(services, task)
    return {
        "task": task, "incident": incident, "node": node,
        "veto": vetoes(approval, task), "next": upcoming,
        "next_countdown": present.countdown(upcoming.at if upcoming else None, now),
        "deadline_countdown": present.countdown(task.deadline, now),
        "mine": any(t.assignee == user.id for t in chain) and task.state == TaskState.open,
        "delegates": eligible_delegates(services.registry.directory, task, now),
    }


async def inbox_cards(services: Services, user: Principal) -> tuple[list[Any], list[Any]]:
    items, _ = await services.read_model.list_tasks(assignee=user.id, limit=100)
    open_cards = [await task_card(services, t, user) for t in items if t.state == TaskState.open]
    done = [t for t in items if t.state != TaskState.open][:20]
    return open_cards, done


@router.get("/inbox", response_class=HTMLResponse)
async def inbox(request: Request) -> HTMLResponse:
    user = await page_user(request)
    if not user.has_any(auth.INBOX_USERS):
        return error_page(request, user, ApiError(403, "The inbox is for approvers."))
    open_cards, done = await inbox_cards(services_of(request), user)
    return render(request, "inbox.html", user, cards=open_cards, done=done)


@router.get("/fragments/inbox", response_class=HTMLResponse)
async def inbox_fragment(request: Request) -> HTMLResponse:
    user = await page_user(request)
    if not user.has_any(auth.INBOX_USERS):
        return error_page(request, user, ApiError(403, "The inbox is for approvers."))
    open_cards, done = await inbox_cards(services_of(request), user)
    return render(request, "_inbox_list.html", user, cards=open_cards, done=done)


async def _readable_task(request: Request, user: Principal, task_id: str) -> Task:
    services = services_of(request)
    user.require(auth.INBOX_USERS, "the task inbox")
    return await lookup.readable_task(user, services.read_model, services.temporal, task_id)


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(request: Request, task_id: TaskPath) -> HTMLResponse:
    user = await page_user(request)
    try:
        found = await _readable_task(request, user, task_id)
    except ApiError as exc:
        return error_page(request, user, exc)
    card = await task_card(services_of(request), found, user)
    return render(request, "task.html", user, card=card)


@router.get("/fragments/tasks/{task_id}", response_class=HTMLResponse)
async def task_fragment(request: Request, task_id: TaskPath) -> HTMLResponse:
    user = await page_user(request)
    try:
        found = await _readable_task(request, user, task_id)
    except ApiError as exc:
        return error_page(request, user, exc)
    return render(request, "_task_card.html", user,
                  card=await task_card(services_of(request), found, user))


@router.post("/tasks/{task_id}/decide", response_class=HTMLResponse)
async def decide(request: Request, task_id: TaskPath,
                 decision: Annotated[str, Form()] = "", comment: Annotated[str, Form()] = "",
                 confirm_veto: Annotated[str, Form()] = "") -> HTMLResponse:
    user = await page_user(request)
    services = services_of(request)
    try:
        found = await _readable_task(request, user, task_id)
        card = await task_card(services, found, user)
        if decision == "reject":
            if not comment.strip():
                return render(request, "_reject_form.html", user, status_code=422, card=card,
                              errors={"comment": "Give a reason: the communicator sees it."},
                              form={"comment": comment}, confirming=False)
            if card["veto"] and confirm_veto != "yes":
                return render(request, "_reject_form.html", user, card=card, errors={},
                              form={"comment": comment}, confirming=True)
        body = DecisionBody(decision=decision, comment=comment)
        result = await command(task_routes.decide(task_id, body, user, services.temporal,
                                                    services.read_model))
    except ValidationError as exc:
        return feedback(request, "; ".join(field_errors(exc).values()), ok=False)
    except ApiError as exc:
        return feedback(request, f"{found.title if 'found' in locals() else task_id}: "
                                 f"{exc.detail}", ok=False)
    verb = "Approved" if decision == "approve" else "Rejected"
    return feedback(request, f"{verb} “{result.task.title}”. The approval is now "
                             f"{result.node.outcome}.")


@router.post("/tasks/{task_id}/delegate", response_class=HTMLResponse)
async def delegate(request: Request, task_id: TaskPath, to: Annotated[str, Form()] = "",
                   comment: Annotated[str, Form()] = "") -> HTMLResponse:
    user = await page_user(request)
    services = services_of(request)
    names = present.Names(services.registry.people_by_id())
    try:
        found = await _readable_task(request, user, task_id)
        allowed = {p.id for p in eligible_delegates(services.registry.directory, found,
                                                    datetime.now(UTC))}
        if to not in allowed:
            raise ApiError(422, "choose someone from the list: members of the role or its "
                                "on-call roster")
        result = await command(task_routes.delegate(
            task_id, DelegateBody(to=to, comment=comment), user, services.temporal,
            services.read_model))
    except ValidationError as exc:
        return feedback(request, "; ".join(field_errors(exc).values()), ok=False)
    except ApiError as exc:
        return feedback(request, str(exc.detail), ok=False)
    return feedback(request, f"Delegated “{result.task.title}” to {names(to)}.")


# ---- leadership dashboard and the post-incident report --------------------------------------


def _day(text: str | None, default: date) -> date:
    try:
        return date.fromisoformat(text) if text else default
    except ValueError:
        return default


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, start: Annotated[str | None, Query()] = None,
                    end: Annotated[str | None, Query()] = None) -> HTMLResponse:
    user = await page_user(request)
    if not user.has_any(auth.INCIDENT_READERS):
        return error_page(request, user, ApiError(403, "The dashboard is for leaders, "
                                                       "communicators and admins."))
    services = services_of(request)
    now = datetime.now(UTC)
    last = _day(end, now.date())
    first = _day(start, last - timedelta(days=29))
    if first > last:
        first, last = last, first
    period_start = datetime.combine(first, time(0), UTC)
    period_end = datetime.combine(last + timedelta(days=1), time(0), UTC)
    figures = await leadership.figures_between(services.read_model, period_start, period_end,
                                               now)
    report = fleet_report(figures, period_start, period_end)
    chart = {"x": [datetime.combine(d.day, time(0), UTC).timestamp()
                   for d in report.incidents_over_time],
             "opened": [d.opened for d in report.incidents_over_time],
             "resolved": [d.resolved for d in report.incidents_over_time]}
    return render(request, "dashboard.html", user, report=report, start=first.isoformat(),
                  end=last.isoformat(), chart=json.dumps(chart),
                  json_url=f"/reports/summary?start={period_start.isoformat()}"
                           f"&end={period_end.isoformat()}")


@router.get("/incidents/{incident_id}/report", response_class=HTMLResponse)
async def report_view(request: Request, incident_id: IncidentPath,
                      print: bool = False) -> HTMLResponse:
    user = await page_user(request)
    services = services_of(request)
    try:
        context = await incident_context(request, user, incident_id)
    except ApiError as exc:
        return error_page(request, user, exc)
    entries = [t["entry"] for t in context["timeline"]]
    metrics = incident_metrics(context["view"], entries, as_of=datetime.now(UTC))
    names = present.Names(services.registry.people_by_id())
    return render(request, "report_view.html", user, metrics=metrics, printable=print,
                  markdown_url=f"/incidents/{incident_id}/report", names=names, **context)


_ = review  # the Markdown report stays at GET /incidents/{id}/report (api.routes.review)


def install(app: FastAPI) -> None:
    """Add the pages, and send browsers without a session to the login page."""

    async def login_needed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginNeeded)
        target = f"/ui/login?next={quote(exc.next_path, safe='')}"
        if request.headers.get("HX-Request"):
            return Response(status_code=401, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    async def page_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageProblem)
        if request.headers.get("HX-Request"):
            return feedback(request, str(exc.error.detail), ok=False)
        return error_page(request, None, exc.error)

    app.add_exception_handler(LoginNeeded, login_needed)
    app.add_exception_handler(PageProblem, page_problem)
    app.include_router(router)

    @app.get("/", include_in_schema=False, response_model=None)
    async def root(request: Request) -> Response:
        session = await session_of(request, get_services(request))
        return RedirectResponse("/ui" if session else "/ui/login", status_code=303)
