"""Live events as Server-Sent Events: `GET /events` (board and inbox) and
`GET /incidents/{id}/events` (one incident).

Each event says *that* an incident changed (`event: change`, data: incident id, rev, the
kinds of timeline entries, changed task ids); pages re-read what they show through the
normal, authorized routes. Every event carries its stream id as the SSE `id`, so a browser
that reconnects sends `Last-Event-ID` and first gets the events it missed (from a bounded
replay buffer, `readmodel.events`), then the live feed. The first event (`ready`) carries
the current position, so even a client that saw no change yet resumes without a gap.

Authorization is per subscriber: the incident stream answers 403/404 like
`GET /incidents/{id}`; on `/events`, communicators, leaders and admins see every incident,
an approver only incidents in which they hold (or held) a task, reporters nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from domain.directory import AccessRole
from readmodel.events import STREAM, LiveEvent, id_key, incident_stream, replay

from .. import auth
from ..auth import Principal
from ..deps import CurrentUser, ReadModelDep, ServicesDep, TemporalDep
from ..errors import ApiError, responses
from .incidents import IncidentId, readable_view

router = APIRouter(tags=["live"])

LastEventId = Annotated[str | None, Header(
    alias="Last-Event-ID", max_length=50, pattern=r"^([0-9]{1,20}-[0-9]{1,20})?$",
    description="resume after this event id (browsers send it when they reconnect)")]

SSE_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "A text/event-stream of `ready` and `change` events",
    "content": {"text/event-stream": {"example": (
        'event: change\nid: 1767225600000-0\ndata: {"id": "1767225600000-0", "incident_id": '
        '"inc-5f1c0e3b9a7d2c4e8f60-0", "rev": 7, "kinds": ["decision"], "assignees": '
        '["lena-legal"], "tasks": ["inc-5f1c0e3b9a7d2c4e8f60-0.approve-holding.1"]}\n\n')}}}}
PING_SECONDS = 15


def _sse(event: LiveEvent) -> ServerSentEvent:
    return ServerSentEvent(data=event.model_dump_json(exclude={"answered"}), event="change",
                           id=event.id)


async def _position(services: ServicesDep, incident_id: str | None) -> str:
    stream = STREAM if incident_id is None else incident_stream(incident_id)
    rows: Any = await services.redis.xrevrange(stream, count=1)
    return str(rows[0][0]) if rows else "0-0"


async def _stream(services: ServicesDep, incident_id: str | None,
                  last_event_id: str | None,
                  allowed: Callable[[LiveEvent], bool]) -> AsyncIterator[ServerSentEvent]:
    async with services.hub.subscribe(incident_id) as sub:
        last = last_event_id
        if last:
            for event in await replay(services.redis, last, incident_id,
                                      services.settings.live_replay_events):
                if allowed(event):
                    yield _sse(event)
                last = event.id
        else:
            last = await _position(services, incident_id)
        yield ServerSentEvent(data="{}", event="ready", id=last)
        while not sub.overflowed:
            event = await sub.queue.get()
            if last and id_key(event.id) <= id_key(last):
                continue  # already replayed
            last = event.id
            if allowed(event):
                yield _sse(event)  # sse-starlette ends the stream when the client leaves


def _valid_resume(last_event_id: str | None) -> str | None:
    from readmodel.events import STREAM_ID
    if last_event_id is None or not last_event_id.strip():
        return None
    if not STREAM_ID.match(last_event_id.strip()):
        raise ApiError(422, "Last-Event-ID is not an event id of this stream", "BadEventId")
    return last_event_id.strip()


@router.get(
    "/incidents/{incident_id}/events", operation_id="streamIncidentEvents",
    response_class=EventSourceResponse,
    summary="Live changes of one incident (Server-Sent Events, resumable)",
    responses={**SSE_RESPONSE, **responses(401, 403, 404, 422)},
)
async def incident_events(
    incident_id: IncidentId, request: Request, user: CurrentUser, services: ServicesDep,
    read_model: ReadModelDep, client: TemporalDep, last_event_id: LastEventId = None,
) -> EventSourceResponse:
    await readable_view(user, read_model, client, incident_id)
    resume = _valid_resume(last_event_id)
    return EventSourceResponse(
        _stream(services, incident_id, resume, lambda _: True), ping=PING_SECONDS)


def event_filter(user: Principal, readable: set[str]) -> Callable[[LiveEvent], bool]:
    """Who sees an event on `/events`: readers all; approvers their incidents only."""
    if user.has_any(auth.INCIDENT_READERS):
        return lambda _: True

    def allowed(event: LiveEvent) -> bool:
        if event.incident_id in readable:
            return True
        if user.id in event.assignees:
            readable.add(event.incident_id)
            return True
        return False
    return allowed


@router.get(
    "/events", operation_id="streamEvents", response_class=EventSourceResponse,
    summary="Live changes of every incident you may read (Server-Sent Events, resumable)",
    responses={**SSE_RESPONSE, **responses(401, 403, 422)},
)
async def all_events(request: Request, user: CurrentUser, services: ServicesDep,
                     read_model: ReadModelDep,
                     last_event_id: LastEventId = None) -> EventSourceResponse:
    if not user.has_any(auth.INCIDENT_READERS | {AccessRole.approver}):
        raise ApiError(403, "live events need the approver, communicator, leader or admin role")
    readable: set[str] = set()
    if not user.has_any(auth.INCIDENT_READERS):
        cursor: str | None = None
        for _ in range(20):
            page, cursor = await read_model.list_tasks(assignee=user.id, cursor=cursor,
                                                       limit=200)
            readable |= {task.incident_id for task in page}
            if cursor is None:
                break
    resume = _valid_resume(last_event_id)
    return EventSourceResponse(
        _stream(services, None, resume, event_filter(user, readable)),
        ping=PING_SECONDS)
