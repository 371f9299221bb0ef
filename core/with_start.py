"""Update-with-start: leave nothing behind when the call fails.

The SDK stores the start's outcome on the `WithStartWorkflowOperation` as well as raising the
update's error. Callers act on the update's error; a start's exception nobody reads makes
asyncio log "Future exception was never retrieved" with a traceback at garbage collection
(for every refused report in a storm, or a worker stopped while seeding).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio.client import WithStartWorkflowOperation

SETTLE_SECONDS = 1.0


async def settle_start(operation: WithStartWorkflowOperation[Any, Any]) -> None:
    """Read (and drop) the start's outcome of a failed update-with-start."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(operation.workflow_handle(), timeout=SETTLE_SECONDS)
