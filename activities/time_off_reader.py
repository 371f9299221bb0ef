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

import structlog
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from domain.directory import TimeOff
from domain.time_off import TIME_OFF_READ_ACTIVITY, ReadTimeOff, TimeOffRead

log = structlog.get_logger("crisis.time_off")

TIME_OFF_WORKFLOW = "TimeOff"  # workflows.time_off.TimeOffWorkflow


@dataclass
class TimeOffReader:
    client: Client

    @activity.defn(name=TIME_OFF_READ_ACTIVITY)
    async def read_time_off(self, req: ReadTimeOff) -> TimeOffRead:
        handle = self.client.get_workflow_handle(req.workflow_id)
        try:
            described = await handle.describe()
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise  # retried by the activity's policy
            log.warning("time_off_workflow_not_found", workflow_id=req.workflow_id)
            return TimeOffRead()
        if described.workflow_type != TIME_OFF_WORKFLOW:
            log.warning("time_off_workflow_of_another_type", workflow_id=req.workflow_id,
                        workflow_type=described.workflow_type)
            return TimeOffRead()
        overlay = await handle.query("time_off", result_type=TimeOff)
        return TimeOffRead(overlay=overlay)
