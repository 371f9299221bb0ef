"""Tiny workflows that run one activity under a bounded RetryPolicy (for activity tests).

Kept in their own module with no side effects on import: the workflow sandbox re-imports it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain.effects import ActionRequest, ActionResult, NotifyRequest, NotifyResult

PROBE_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1),
                          backoff_coefficient=2.0)
PROBE_TIMEOUT = timedelta(seconds=30)


@workflow.defn
class RunActionProbe:
    @workflow.run
    async def run(self, req: ActionRequest) -> ActionResult:
        result: ActionResult = await workflow.execute_activity(
            "run_action", req, result_type=ActionResult,
            start_to_close_timeout=PROBE_TIMEOUT, retry_policy=PROBE_RETRY)
        return result


@workflow.defn
class NotifyProbe:
    @workflow.run
    async def run(self, req: NotifyRequest) -> NotifyResult:
        result: NotifyResult = await workflow.execute_activity(
            "notify", req, result_type=NotifyResult,
            start_to_close_timeout=PROBE_TIMEOUT, retry_policy=PROBE_RETRY)
        return result
