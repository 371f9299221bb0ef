"""The pages that signed action links open: `GET /ui/act/<token>` shows the exact text
and a confirm button and never changes anything; `POST /ui/act/<token>` decides, once,
through the same route function as `POST /tasks/{id}/decision` (`core.action_links`).

Every way a link can be wrong gets its own clear page: tampered (bad signature),
expired, already used, foreign (issued to someone who does not hold the task, or opened
while signed in as someone else), the text changed since the link was sent, or the task was
delegated, decided or cancelled meanwhile.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from core.action_links import (
    LinkClaims,
    LinkInvalid,
    claim_use,
    content_sha256,
    release_use,
    was_used,
)
from domain.incident import Task, TaskState

from .. import lookup
from ..auth import Principal
from ..deps import get_services, session_of
from ..errors import ApiError
from ..routes import tasks as task_routes
from ..schemas import DecisionBody
from .pages import command, render, task_card

router = APIRouter(prefix="/ui/act", include_in_schema=False)

STATE_TEXT = {
    TaskState.approved: "was already approved", TaskState.rejected: "was already rejected",
    TaskState.delegated: "was delegated to someone else",
    TaskState.cancelled: "was cancelled (the approval ended or the incident was resolved)",
    TaskState.expired: "expired without a decision",
}


def _problem(request: Request, title: str, detail: str, status: int) -> HTMLResponse:
    return render(request, "act_problem.html", None, status_code=status, title=title,
                  detail=detail)


async def _check(request: Request, token: str) -> tuple[LinkClaims, Task, Principal] | \
        HTMLResponse:
    services = get_services(request)
    try:
        claims = services.links.verify(token)
    except LinkInvalid:
        return _problem(request, "This link is not valid",
                        "It was changed, cut short, or signed with a key this server no longer "
                        "has. Open the task from your inbox instead.", 400)
    now = datetime.now(UTC)
    task = await lookup.task(services.read_model, services.temporal, claims.task_id)
    person = services.registry.person(claims.assignee)
    if task is None or person is None:
        return _problem(request, "This task does not exist",
                        "The link names a task or a person this server does not know.", 404)
    if task.assignee != claims.assignee:
        return _problem(request, "This link is not yours",
                        "It was issued to someone who does not hold this task.", 403)
    session = await session_of(request, services)
    if session is not None and session.person_id != claims.assignee:
        return _problem(request, "This link was sent to someone else",
                        f"You are signed in as {session.person_id}; the link belongs to "
                        f"{person.name}. Nothing was changed.", 403)
    if await was_used(services.redis, claims):
        return _problem(request, "This link was already used",
                        "A decision was made with it; a link works once.", 409)
    if task.state != TaskState.open:
        return _problem(request, "Nothing left to decide",
                        f"This task {STATE_TEXT.get(task.state, task.state.value)}.", 409)
    if claims.expired(now):
        return _problem(request, "This link has expired",
                        "It expired with the task's deadline. Open your inbox for current "
                        "tasks.", 410)
    if content_sha256(task.content) != claims.content_sha256:
        return _problem(request, "The text changed",
                        "The draft was edited after this link was sent; open the task to read "
                        "the current text.", 409)
    return claims, task, Principal.of(person)


@router.get("/{token}", response_class=HTMLResponse)
async def confirm_page(request: Request, token: str) -> HTMLResponse:
    checked = await _check(request, token)
    if isinstance(checked, HTMLResponse):
        return checked
    claims, task, principal = checked
    services = get_services(request)
    card = await task_card(services, task, principal)
    return render(request, "act.html", None, claims=claims, card=card, token=token,
                  confirm=services.links.confirm_token(claims), errors={}, comment="")


@router.post("/{token}", response_class=HTMLResponse)
async def act(request: Request, token: str, confirm: Annotated[str, Form()] = "",
              comment: Annotated[str, Form(max_length=2000)] = "",
              confirm_veto: Annotated[str, Form()] = "") -> HTMLResponse:
    checked = await _check(request, token)
    if isinstance(checked, HTMLResponse):
        return checked
    claims, task, principal = checked
    services = get_services(request)
    card = await task_card(services, task, principal)
    if not services.links.confirm_ok(claims, confirm):
        return _problem(request, "Please confirm from the link's page",
                        "This form did not come from the confirmation page.", 403)
    errors = {}
    if claims.action == "reject" and not comment.strip():
        errors["comment"] = "Give a reason: the communicator sees it."
    if claims.action == "reject" and card["veto"] and confirm_veto != "yes":
        errors["confirm_veto"] = "Tick the box: this reject is a veto."
    if errors:
        return render(request, "act.html", None, status_code=422, claims=claims, card=card,
                      token=token, confirm=confirm, errors=errors, comment=comment)
    now = datetime.now(UTC)
    if not await claim_use(services.redis, claims, now):
        return _problem(request, "This link was already used",
                        "A decision was made with it; a link works once.", 409)
    try:
        result = await command(task_routes.decide(
            claims.task_id, DecisionBody(decision=claims.action, comment=comment,
                                         draft_sha256=claims.content_sha256),
            principal, services.temporal, services.read_model,
            idempotency_key=claims.idempotency_key))
    except ApiError as exc:
        if exc.status_code >= 500:
            await release_use(services.redis, claims)
        return _problem(request, "The decision was not recorded", str(exc.detail),
                        exc.status_code)
    return render(request, "act_done.html", None, task=result.task, node=result.node,
                  action=claims.action)
