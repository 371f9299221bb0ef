"""`forward_reports`: reports that reached an incident after its resolution go on to the
open incident for the same dedup key, opening the next one if none is open
(`domain.forwarding`). The reporters were already told their report was accepted, so this
must place every one: each is idempotent by report id, and the activity is retried."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from temporalio import activity

from api.intake import ReportRouter, dedup_lane, title_from
from domain.forwarding import FORWARD_ACTIVITY, ForwardReports
from domain.incident import Report, StartIncident


class ReportForwarder:
    def __init__(self, router: ReportRouter) -> None:
        self._router = router

    @activity.defn(name=FORWARD_ACTIVITY)
    async def forward_reports(self, request: ForwardReports) -> None:
        key = dedup_lane(request.dedup_key)
        # never back to the resolved incident: it would hand them on again, forever
        self._router.forget(key, request.from_incident_id)

        def build_start(report: Report) -> Callable[[str], StartIncident]:
            template = request.template.model_copy(update={
                "opening_report_id": report.id, "summary": report.summary,
                "title": title_from(report.summary), "opened_by": report.reported_by,
                "source_url": report.source_url, "state": None})
            return lambda incident_id: template.model_copy(update={"incident_id": incident_id})

        results = await asyncio.gather(*(
            self._router.submit(key, report, build_start(report), ack=True)
            for report in request.reports))
        activity.logger.info("forwarded %s late reports from %s to %s", len(results),
                             request.from_incident_id,
                             sorted({r.incident.id for r in results}))
