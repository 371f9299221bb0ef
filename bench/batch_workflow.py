"""A prototype for the intake storm bench: `IncidentWorkflow` plus an `add_reports` signal.

Not shipped: it shows what one signal per batch of reports (instead of one per report)
would give; the change proposed for `workflows/incident.py` is this handler, verbatim.
"""

from __future__ import annotations

from temporalio import workflow

from workflows.incident import IncidentWorkflow

with workflow.unsafe.imports_passed_through():
    from domain.incident import IncidentFinal, Report, StartIncident


@workflow.defn(name="IncidentWorkflow")
class BatchedIncidentWorkflow(IncidentWorkflow):
    @workflow.init
    def __init__(self, start: StartIncident) -> None:
        super().__init__(start)
        self._forward = False  # this prototype drops late reports: the API must confirm

    @workflow.run
    async def run(self, start: StartIncident) -> IncidentFinal:
        return await super().run(start)

    @workflow.signal(name="add_reports")
    async def add_reports(self, reports: list[Report]) -> None:
        """Add each report not yet on the timeline (by id); ignored once resolved."""
        if not self.ledger.is_open:
            return
        seen = {e.details.get("report_id") for e in self.ledger.state.timeline}
        fresh = [r for r in reports if r.id not in seen]
        for report in fresh:
            self.ledger.add_report(report, workflow.now())
        if fresh:
            await self._sync()

    @workflow.query(name="forwards_late_reports")
    def forwards_late_reports(self) -> bool:
        """This prototype drops reports signalled after resolution: the API must confirm."""
        return False
