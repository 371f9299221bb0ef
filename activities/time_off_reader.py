"""`time_off_read`: the time-off overlay, read from the deployment's `TimeOff` workflow.

Running incidents are told of each new overlay revision by signal `time_off`. A signal is
only its sender's word: anyone who can reach Temporal could send one marking every legal
approver away (the on-call stand-ins would get their tasks), with a revision so high that
no real change would be taken after it. Changes to the overlay are signed updates checked
by the worker (`core/actor_signing.py`), so the `TimeOff` workflow's own state is the
authority: incidents read it through this activity, from the workflow of that id and type
only. The read is recorded in the incident's history, so replay never repeats it.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import activity
from temporalio.client import Client

from activities.authority_workflows import authority_handle
from domain.directory import TimeOff
from domain.time_off import TIME_OFF_READ_ACTIVITY, ReadTimeOff, TimeOffRead

TIME_OFF_WORKFLOW = "TimeOff"  # workflows.time_off.TimeOffWorkflow


@dataclass
class TimeOffReader:
    client: Client

    @activity.defn(name=TIME_OFF_READ_ACTIVITY)
    async def read_time_off(self, req: ReadTimeOff) -> TimeOffRead:
        handle = await authority_handle(self.client, req.workflow_id,
                                        workflow_type=TIME_OFF_WORKFLOW)
        if handle is None:
            return TimeOffRead()
        overlay = await handle.query("time_off", result_type=TimeOff)
        return TimeOffRead(overlay=overlay)
