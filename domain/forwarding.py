"""Reports that reached an incident after it was resolved, handed on to the next incident.

The API acknowledges a storm report once Temporal has accepted its `add_reports` signal
(durable from then on). A signal that lands while the incident is being resolved (resolved,
its run not yet closed) is not dropped: the workflow collects those reports and, before it
completes, sends them with `ForwardReports` to the `forward_reports` activity, which puts
each on the open incident for the same dedup key, opening the next one if none is open.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from domain.incident import Report, StartIncident

FORWARD_ACTIVITY = "forward_reports"


class ForwardReports(BaseModel):
    from_incident_id: str  # resolved: the forwarder must never send them back there
    dedup_key: str
    # what the next incident is opened with (the resolved one's playbook, directory and
    # severity); `incident_id`, `opening_report_id`, title and summary are set per opener
    template: StartIncident
    reports: list[Report] = Field(min_length=1)
