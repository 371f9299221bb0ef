"""Send an update to a workflow's current run, across continue-as-new.

A workflow that continues as new first finishes every handler it accepted, then closes its
run. An update that reaches the run in that moment (admitted, not yet accepted) is refused
with NOT_FOUND "Completed workflow" by the time-skipping server and by servers that do not
move it to the next run themselves. Nothing ran: the update is sent again, to the run that
continued, a few times. A NOT_FOUND for a workflow that is not running (closed, or never
existed) is the caller's to map, as before.

Sending again is safe: a refused update never reached a handler, and each command the
callers send is keyed (`request_id`) in the workflow anyway.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import structlog
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

log = structlog.get_logger(__name__)

# A run continues as new at most every few hundred events; two refusals in a row are rare.
RESENDS = 5
RESEND_PAUSE_SECONDS = 0.05


async def update_current_run(handle: WorkflowHandle[Any, Any], update: Any, arg: Any, *,
                             result_type: type | None = None,
                             update_id: str | None = None) -> Any:
    """`handle.execute_update(update, arg)`, sent again while the refusal was a run that
    continued as new. `handle` must not be pinned to a run (`run_id` None). Every send
    carries the same update id (`update_id`, or one made here)."""
    update_id = update_id or str(uuid.uuid4())
    for resend in range(RESENDS + 1):
        try:
            return await handle.execute_update(update, arg, id=update_id,
                                               result_type=result_type)
        except RPCError as exc:
            if (exc.status != RPCStatusCode.NOT_FOUND or resend == RESENDS
                    or not await _still_running(handle)):
                raise
            log.info("update_resent_after_continue_as_new", workflow_id=handle.id,
                     resend=resend + 1)
            await asyncio.sleep(RESEND_PAUSE_SECONDS * (resend + 1))
    raise AssertionError("unreachable")


async def _still_running(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether the workflow's latest run is running (so the refused run continued as new)."""
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.status == WorkflowExecutionStatus.RUNNING
