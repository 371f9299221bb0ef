"""The baseline for the benchmarks: the least a Temporal incident workflow can do.

`BareWorkflow` runs 3 no-op `bare_notify` activities (in parallel, like crisis-engine's
fan-out to recipients), marks itself ready, then waits for 2 `approve` updates; each update
returns only after a no-op `bare_project` activity, as crisis-engine's commands are answered
only once the Redis projection is written (its bench waits for that, like its API). This is
the "bare workflow" of TEMPORAL-NOTES.md (17-19 incidents/s on the dev server with SQLite),
so crisis-engine's figures can be read as a ratio to it, measured in the same run on the
same machine.

The module has no side effects on import: the workflow sandbox re-imports it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow

BARE_NOTIFICATIONS = 3
BARE_QUORUM = 2
BARE_ACTIVITY_TIMEOUT = timedelta(seconds=30)


@activity.defn(name="bare_notify")
async def bare_notify(key: str) -> None:
    """Stands in for `notify`: does nothing."""


@activity.defn(name="bare_project")
async def bare_project(key: str) -> None:
    """Stands in for `project`: does nothing."""


BARE_ACTIVITIES = [bare_notify, bare_project]


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    def __init__(self) -> None:
        self.notified = False
        self.approvals = 0

    @workflow.run
    async def run(self, incident_id: str) -> int:
        notifications = [
            asyncio.ensure_future(workflow.execute_activity(
                bare_notify, f"{incident_id}:notify:{n}",
                start_to_close_timeout=BARE_ACTIVITY_TIMEOUT))
            for n in range(BARE_NOTIFICATIONS)]
        await workflow.wait(notifications)
        for notification in notifications:
            notification.result()
        self.notified = True
        await workflow.wait_condition(lambda: self.approvals >= BARE_QUORUM)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.approvals

    @workflow.update(name="approve")
    async def approve(self, approver: str) -> int:
        self.approvals += 1
        count = self.approvals
        await workflow.execute_activity(
            bare_project, f"{workflow.info().workflow_id}:{approver}",
            start_to_close_timeout=BARE_ACTIVITY_TIMEOUT)
        return count

    @workflow.query(name="ready")
    def ready(self) -> bool:
        return self.notified
