"""The workflow an activity reads authoritative state from, and only that one.

Signals carry no signature, so a workflow told something by a signal reads the truth from
the workflow that holds it, whose changes are signed updates (`core/actor_signing.py`):
the catalog reads a policy review (`review_reader`), an incident the time-off overlay
(`time_off_reader`). Such a read accepts the workflow only at the expected id, of the
expected type, and (where given) started by the expected parent: never whatever workflow a
signal names.
"""

from __future__ import annotations

from typing import Any

import structlog
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

log = structlog.get_logger("crisis.authority")


async def authority_handle(client: Client, workflow_id: str, *, workflow_type: str,
                           parent_id: str | None = None) -> WorkflowHandle[Any, Any] | None:
    """The handle of `workflow_id` if it is a `workflow_type` workflow (started by
    `parent_id`, when given); None, logged, if there is none such. Other RPC errors are
    raised (the calling activity's retry policy retries them)."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise
        log.warning("authority_workflow_not_found", workflow_id=workflow_id,
                    workflow_type=workflow_type)
        return None
    if described.workflow_type != workflow_type or (
            parent_id is not None and described.parent_id != parent_id):
        log.warning("authority_workflow_refused", workflow_id=workflow_id,
                    expected_type=workflow_type, workflow_type=described.workflow_type,
                    expected_parent=parent_id, parent_id=described.parent_id)
        return None
    return handle
