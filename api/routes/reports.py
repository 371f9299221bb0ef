"""Reports: any employee (or monitoring tool) sends a signal in one call."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from domain.incident import Report, StartIncident

from .. import ratelimit
from ..deps import CurrentUser, IntakeDep, RegistryDep, ServicesDep, SettingsDep
from ..errors import (
    IDEMPOTENCY_KEY_REUSED,
    NO_ROUTE,
    REQUEST_IN_FLIGHT,
    SEVERITY_NOT_SUPPORTED,
    UNKNOWN_PLAYBOOK,
    ApiError,
    responses,
)
from ..intake import new_report_id
from ..schemas import ReportReceipt, ReportRequest
from .incidents import IdempotencyKey

router = APIRouter(tags=["reports"])

TITLE_CHARS = 120


def title_from(summary: str) -> str:
    first_line = summary.strip().splitlines()[0] if summary.strip() else summary
    short = first_line if len(first_line) <= TITLE_CHARS else first_line[:TITLE_CHARS - 1] + "…"
    return f"Report: {short}"


@router.post(
    "/reports", status_code=201, response_model=ReportReceipt, operation_id="postReport",
    dependencies=[ratelimit.REPORTS],
    summary="Report a signal: attaches to the open incident with its key, or opens one",
    description=(
        "Reports with the same `dedup_key` (or, without one, the same `source_url`) attach "
        "to one open incident; when none is open the report opens an incident with the "
        "playbook that the routing table (`config/routing.yaml`) gives for its severity. "
        "201 when this report opened the incident, 200 when it was added to an open one. "
        "The receipt is all a reporter sees."),
    responses={200: {"model": ReportReceipt, "description": "Added to an open incident"},
               **responses(401, 409, 413, 422, 503, errors=[
                   REQUEST_IN_FLIGHT, IDEMPOTENCY_KEY_REUSED, NO_ROUTE, UNKNOWN_PLAYBOOK,
                   SEVERITY_NOT_SUPPORTED])},
)
async def post_report(
    body: ReportRequest, user: CurrentUser, services: ServicesDep, registry: RegistryDep,
    intake: IntakeDep, settings: SettingsDep, response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ReportReceipt:
    route = services.routing.route(body.severity)
    if route is None:
        raise ApiError(422, f"no playbook is routed for severity {body.severity}", "NoRoute")
    playbook_id, severity = route
    snapshot = registry.get(playbook_id)
    if snapshot is None:
        raise ApiError(422, f"the routing table names unknown playbook {playbook_id!r}",
                       "UnknownPlaybook")
    if severity not in snapshot.definition.severities:
        raise ApiError(422, f"playbook {playbook_id!r} does not handle severity "
                            f"{severity.value}", "SeverityNotSupported")
    directory = registry.directory_snapshot()
    report = Report(id=new_report_id(user.id, idempotency_key), summary=body.summary,
                    source_url=body.source_url, severity=body.severity, reported_by=user.id)
    explicit_key = body.dedup_key or body.source_url

    def build_start(incident_id: str) -> StartIncident:
        return StartIncident(
            incident_id=incident_id, title=title_from(body.summary), summary=body.summary,
            severity=severity, source_url=body.source_url, dedup_key=explicit_key,
            opened_by=user.id, opening_report_id=report.id, playbook=snapshot,
            directory=directory, public_url=settings.public_url,
            continue_as_new_after_events=settings.continue_as_new_after_events)

    dedup_key = explicit_key if explicit_key is not None else f"uuid:{uuid.uuid4()}"
    result = await intake.submit(dedup_key, report, build_start)
    if not result.created:
        response.status_code = 200
    return ReportReceipt(incident_id=result.incident.id, created=result.created,
                         report_id=result.report_id)
