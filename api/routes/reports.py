"""Reports: any employee (or monitoring tool) sends a signal in one call."""

from __future__ import annotations

from fastapi import APIRouter, Response

from .. import ratelimit
from ..deps import CurrentUser, IntakeDep
from ..errors import (
    IDEMPOTENCY_KEY_REUSED,
    NO_ROUTE,
    REQUEST_IN_FLIGHT,
    SEVERITY_NOT_SUPPORTED,
    UNKNOWN_PLAYBOOK,
    responses,
)
from ..intake import IntakeCommand
from ..schemas import ReportReceipt, ReportRequest
from .incidents import IdempotencyKey

router = APIRouter(tags=["reports"])


@router.post(
    "/reports", status_code=201, response_model=ReportReceipt, operation_id="postReport",
    dependencies=[ratelimit.REPORTS],
    summary="Report a signal: attaches to the open incident with its key, or opens one",
    description=(
        "Reports with the same `dedup_key` (or, without one, the same `source_url`) attach "
        "to one open incident; when none is open the report opens an incident with the "
        "playbook that the routing table (`config/routing.yaml`) gives for its severity. "
        "201 when this report opened the incident, 200 when it was added to an open one, "
        "202 when it was accepted for the open incident `incident_id` (durably: it is never "
        "lost) without waiting for that incident to record it, as happens under a storm of "
        "duplicates. A 202 report lands on `incident_id`'s timeline within moments, or, if "
        "that incident was being resolved just then, on the next incident for the key. "
        "The receipt is all a reporter sees."),
    responses={200: {"model": ReportReceipt, "description": "Added to an open incident"},
               202: {"model": ReportReceipt,
                     "description": "Accepted for the open incident (durably)"},
               **responses(401, 409, 413, 422, 503, errors=[
                   REQUEST_IN_FLIGHT, IDEMPOTENCY_KEY_REUSED, NO_ROUTE, UNKNOWN_PLAYBOOK,
                   SEVERITY_NOT_SUPPORTED])},
)
async def post_report(
    body: ReportRequest, user: CurrentUser, intake: IntakeDep, response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ReportReceipt:
    result = await intake.open_or_attach(IntakeCommand(
        actor=user.id, summary=body.summary, severity=body.severity,
        dedup_key=body.dedup_key or body.source_url, source_url=body.source_url,
        idempotency_key=idempotency_key, durable_ack=True))
    if not result.created:
        response.status_code = 202 if result.accepted else 200
    return ReportReceipt(incident_id=result.incident.id, created=result.created,
                         report_id=result.report_id)
