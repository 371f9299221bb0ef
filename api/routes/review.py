"""The leadership review: an incident's decision-latency metrics and its post-incident report.

Both read the incident under the same rule as `GET /incidents/{id}` (`readable_view`) and
compute everything from the view and the timeline (`domain.metrics`), as of now.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response

from domain.metrics import incident_metrics, render_report

from .. import lookup
from ..deps import CurrentUser, ReadModelDep, TemporalDep
from ..errors import responses
from ..schemas import IncidentMetricsOut
from .incidents import IncidentId, readable_view

router = APIRouter(prefix="/incidents", tags=["review"])

MARKDOWN = "text/markdown; charset=utf-8"
REPORT_EXAMPLE = ("# Post-incident report: Holiday ad backlash\n\n- **Severity:** high\n"
                  "- **Playbook:** `viral-complaint` version 3 (sha256 `9f86d081884c`)\n...")


@router.get(
    "/{incident_id}/metrics", response_model=IncidentMetricsOut, operation_id="getMetrics",
    summary="Decision-latency metrics: time to first ack, to quorum, to resolution; "
            "the slowest role and person",
    responses=responses(401, 403, 404, 422, 503),
)
async def get_metrics(incident_id: IncidentId, user: CurrentUser, read_model: ReadModelDep,
                      client: TemporalDep) -> IncidentMetricsOut:
    view = await readable_view(user, read_model, client, incident_id)
    entries = await lookup.timeline(read_model, client, incident_id)
    metrics = incident_metrics(view, entries, as_of=datetime.now(UTC))
    return IncidentMetricsOut.model_validate(metrics.model_dump())


@router.get(
    "/{incident_id}/report", response_class=Response, operation_id="getIncidentReport",
    summary="The post-incident report, as Markdown",
    responses={200: {"content": {"text/markdown": {"example": REPORT_EXAMPLE}},
                     "description": "A Markdown document"},
               **responses(401, 403, 404, 422, 503)},
)
async def get_report(incident_id: IncidentId, user: CurrentUser, read_model: ReadModelDep,
                     client: TemporalDep) -> Response:
    view = await readable_view(user, read_model, client, incident_id)
    entries = await lookup.timeline(read_model, client, incident_id)
    metrics = incident_metrics(view, entries, as_of=datetime.now(UTC))
    return Response(render_report(view, entries, metrics), media_type=MARKDOWN, headers={
        "Content-Disposition": f'inline; filename="{incident_id}-report.md"'})
