"""Incidents: open (deduplicated), list, read, timeline, status updates, resolve."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Path, Query, Response

from domain import errors as codes
from domain.ids import INCIDENT_ID
from domain.incident import (
    Incident,
    IncidentStatus,
    IncidentView,
    ResolveRequest,
    StatusUpdateRequest,
    TaskState,
    TimelineEntry,
)
from domain.playbook import Severity
from readmodel.reader import MAX_TIMELINE_LIMIT, timeline_cursor
from workflows.incident import IncidentWorkflow

from .. import auth, lookup, ratelimit
from ..deps import (
    CurrentUser,
    IncidentReader,
    IncidentWriter,
    IntakeDep,
    ReadModelDep,
    TemporalDep,
)
from ..errors import (
    IDEMPOTENCY_KEY_REUSED,
    REQUEST_IN_FLIGHT,
    SEVERITY_NOT_SUPPORTED,
    UNKNOWN_PLAYBOOK,
    ApiError,
    responses,
)
from ..intake import IntakeCommand
from ..schemas import (
    IncidentDetail,
    IncidentOut,
    IncidentPage,
    Links,
    OpenIncidentRequest,
    OpenIncidentResponse,
    ResolveBody,
    StatusUpdateBody,
    StatusUpdateOut,
    Timeline,
)

router = APIRouter(prefix="/incidents", tags=["incidents"])

IncidentId = Annotated[str, Path(pattern=INCIDENT_ID.pattern, description="incident id",
                                 examples=["inc-5f1c0e3b9a7d2c4e8f60-0"])]
TIMELINE_PAGE = 500  # entries per timeline page unless `limit` says otherwise
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=255,
    description="Retry-safe key: the same key and body return the stored response")]


def links(incident_id: str) -> Links:
    return Links(self=f"/incidents/{incident_id}", timeline=f"/incidents/{incident_id}/timeline",
                 tasks=f"/tasks?incident_id={incident_id}")


@router.post(
    "", status_code=201, response_model=OpenIncidentResponse, operation_id="openIncident",
    dependencies=[ratelimit.INCIDENTS],
    summary="Open an incident (or add a report to the open one with this dedup_key)",
    responses={200: {"model": OpenIncidentResponse,
                     "description": "An open incident had this dedup_key: a report was added"},
               **responses(401, 403, 409, 413, 422, 503,
                           errors=[REQUEST_IN_FLIGHT, IDEMPOTENCY_KEY_REUSED, UNKNOWN_PLAYBOOK,
                                   SEVERITY_NOT_SUPPORTED, codes.REQUEST_CONFLICT])},
)
async def open_incident(
    body: OpenIncidentRequest, user: IncidentWriter, intake: IntakeDep, response: Response,
    idempotency_key: IdempotencyKey = None,
) -> OpenIncidentResponse:
    result = await intake.open_or_attach(IntakeCommand(
        actor=user.id, summary=body.summary, severity=body.severity, dedup_key=body.dedup_key,
        source_url=body.source_url, title=body.title, playbook=body.playbook,
        idempotency_key=idempotency_key))
    if not result.created:
        response.status_code = 200
    incident = result.incident
    return OpenIncidentResponse(id=incident.id, status=incident.status, created=result.created,
                                report_id=result.report_id, playbook=incident.playbook,
                                links=links(incident.id))


@router.get(
    "", response_model=IncidentPage, summary="List incidents, newest first",
    operation_id="listIncidents", responses=responses(401, 403, 422, 503),
)
async def list_incidents(
    user: IncidentReader, read_model: ReadModelDep,
    status: IncidentStatus | None = None, severity: Severity | None = None,
    playbook: Annotated[str | None, Query(max_length=64)] = None,
    opened_after: Annotated[datetime | None, Query(
        description="ISO 8601; inclusive", examples=["2026-03-02T00:00:00Z"])] = None,
    opened_before: Annotated[datetime | None, Query(
        description="ISO 8601; exclusive", examples=["2026-03-09T00:00:00Z"])] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> IncidentPage:
    try:
        items, next_cursor = await read_model.list_incidents(
            status=status, severity=severity, playbook=playbook, opened_after=opened_after,
            opened_before=opened_before, cursor=cursor, limit=limit)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    return IncidentPage(items=items, next_cursor=next_cursor)


async def readable_view(user: auth.Principal, read_model: ReadModelDep, client: TemporalDep,
                        incident_id: str) -> IncidentView:
    """The incident's view if the caller may read it: 403 for the wrong role; 404 alike for
    an unknown incident and for one the caller may not see (`lookup.readable_incident`)."""
    return await lookup.readable_incident(user, read_model, client, incident_id)


@router.get(
    "/{incident_id}", response_model=IncidentDetail, operation_id="getIncident",
    summary="An incident: state, approval nodes, open tasks and its playbook version",
    responses=responses(401, 403, 404, 422, 503),
)
async def get_incident(incident_id: IncidentId, user: CurrentUser, read_model: ReadModelDep,
                       client: TemporalDep) -> IncidentDetail:
    view = await readable_view(user, read_model, client, incident_id)
    return IncidentDetail(
        incident=view.incident, playbook=view.incident.playbook, nodes=view.nodes,
        open_tasks=[t for t in view.tasks if t.state == TaskState.open], tasks=view.tasks)


@router.get(
    "/{incident_id}/timeline", response_model=Timeline, operation_id="getTimeline",
    summary="The incident's timeline, oldest first, a page at a time",
    description=("Pages of at most `limit` entries (by `seq`); `next_cursor` and `next` lead "
                 "to the following page and are null on the last one. Every entry appears "
                 "exactly once across the pages, even while entries are being added."),
    responses=responses(401, 403, 404, 422, 503),
)
async def get_timeline(
    incident_id: IncidentId, user: CurrentUser, read_model: ReadModelDep, client: TemporalDep,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_TIMELINE_LIMIT)] = TIMELINE_PAGE,
) -> Timeline:
    await readable_view(user, read_model, client, incident_id)
    try:
        entries, next_cursor = await read_model.timeline_page(incident_id, cursor=cursor,
                                                              limit=limit)
        if not entries and cursor is None:  # not projected yet: ask the workflow
            entries, next_cursor = _page(await lookup.timeline(read_model, client, incident_id),
                                         limit)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    query = urlencode({"cursor": next_cursor, "limit": limit}) if next_cursor else None
    return Timeline(incident_id=incident_id, entries=entries, next_cursor=next_cursor,
                    next=None if query is None else f"/incidents/{incident_id}/timeline?{query}")


def _page(entries: list[TimelineEntry], limit: int) -> tuple[list[TimelineEntry], str | None]:
    ordered = sorted(entries, key=lambda e: e.seq)
    page = ordered[:limit]
    return page, timeline_cursor(page[-1].seq) if len(ordered) > limit else None


@router.post(
    "/{incident_id}/status-updates", status_code=201, response_model=StatusUpdateOut,
    summary="Post a status update to the incident's timeline", operation_id="postStatusUpdate",
    responses=responses(401, 403, 404, 409, 413, 422, 503,
                        errors=[codes.FORBIDDEN, codes.INCIDENT_CLOSED, REQUEST_IN_FLIGHT,
                                codes.REQUEST_CONFLICT, IDEMPOTENCY_KEY_REUSED]),
)
async def post_status_update(
    incident_id: IncidentId, body: StatusUpdateBody, user: IncidentWriter, client: TemporalDep,
    read_model: ReadModelDep, idempotency_key: IdempotencyKey = None,
) -> StatusUpdateOut:
    request = StatusUpdateRequest(request_id=lookup.request_id(user.id, idempotency_key),
                                  actor=user.id, message=body.message)
    entry: TimelineEntry = await lookup.execute_update(
        client, read_model, incident_id, IncidentWorkflow.post_status_update, request)
    return StatusUpdateOut(entry=entry)


@router.post(
    "/{incident_id}/resolve", response_model=IncidentOut, summary="Resolve the incident",
    operation_id="resolveIncident",
    responses=responses(401, 403, 404, 409, 413, 422, 503,
                        errors=[codes.FORBIDDEN, codes.INCIDENT_CLOSED, REQUEST_IN_FLIGHT,
                                codes.REQUEST_CONFLICT, IDEMPOTENCY_KEY_REUSED]),
)
async def resolve_incident(
    incident_id: IncidentId, body: ResolveBody, user: IncidentWriter, client: TemporalDep,
    read_model: ReadModelDep, idempotency_key: IdempotencyKey = None,
    intake: IntakeDep = None,  # type: ignore[assignment]
) -> IncidentOut:
    request = ResolveRequest(request_id=lookup.request_id(user.id, idempotency_key),
                             actor=user.id, summary=body.summary)
    incident: Incident = await lookup.execute_update(
        client, read_model, incident_id, IncidentWorkflow.resolve, request)
    if intake is not None:  # this process's next report for the key opens the next incident
        intake.forget_incident(incident_id)
    return IncidentOut(incident=incident)
