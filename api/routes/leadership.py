"""Leadership figures across incidents over a period, as JSON (`domain.fleet`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from domain.fleet import FleetReport, IncidentFigures, fleet_report
from domain.incident import IncidentStatus
from domain.metrics import incident_metrics
from readmodel.reader import ReadModel

from ..deps import IncidentReader, ReadModelDep
from ..errors import ApiError, responses

router = APIRouter(prefix="/reports", tags=["reports"])

MAX_INCIDENTS = 5000
DEFAULT_DAYS = 30


def period(start: datetime | None, end: datetime | None,
           now: datetime) -> tuple[datetime, datetime]:
    """[start, end): default the last 30 days up to now; naive times are UTC."""
    end = (end or now).replace(tzinfo=(end or now).tzinfo or UTC)
    start = (start or end - timedelta(days=DEFAULT_DAYS))
    start = start.replace(tzinfo=start.tzinfo or UTC)
    if start >= end:
        raise ApiError(422, "the period's start must be before its end", "BadPeriod")
    return start, end


async def figures_between(read_model: ReadModel, start: datetime, end: datetime,
                          as_of: datetime) -> list[IncidentFigures]:
    out: list[IncidentFigures] = []
    cursor: str | None = None
    while len(out) < MAX_INCIDENTS:
        page, cursor = await read_model.list_incidents(opened_after=start, opened_before=end,
                                                       cursor=cursor, limit=200)
        for incident in page:
            view = await read_model.incident_view(incident.id)
            if view is None:
                continue
            entries = await read_model.timeline(incident.id)
            out.append(IncidentFigures(
                metrics=incident_metrics(view, entries, as_of=as_of),
                playbook=incident.playbook.id,
                resolved=incident.status == IncidentStatus.resolved))
        if cursor is None:
            break
    return out


@router.get(
    "/summary", response_model=FleetReport, operation_id="reportSummary",
    summary="Leadership figures over a period: MTTA, MTTR, time to quorum per node, "
            "slowest roles and people, escalations per playbook, incidents per day",
    responses=responses(401, 403, 422),
)
async def report_summary(
    user: IncidentReader, read_model: ReadModelDep,
    start: Annotated[datetime | None, Query(
        description="ISO 8601, inclusive; default 30 days before `end`")] = None,
    end: Annotated[datetime | None, Query(description="ISO 8601, exclusive; default now")] = None,
) -> FleetReport:
    now = datetime.now(UTC)
    first, last = period(start, end, now)
    return fleet_report(await figures_between(read_model, first, last, now), first, last)
