"""Container health check for `crisis worker`: healthy while *this* container's worker polls.

Temporal lists, per task queue, the pollers it has seen recently, each with the worker's
identity (the SDK's default is `<pid>@<hostname>`, and a container's hostname is its own).
The check passes when a poller from this host polled both the workflow and the activity
queue within `RECENT_SECONDS`. A worker that hangs, crashed its poll loop or lost its
connection stops polling, so its container turns unhealthy even while the process lives.

Reads `CRISIS_TEMPORAL_ADDRESS`, `CRISIS_TEMPORAL_NAMESPACE`, `CRISIS_TASK_QUEUE` and the
TLS / API-key settings like the worker does (core/temporal_client.py).
Exit status 0 = healthy, 1 = unhealthy (the reason goes to stderr).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from core.config import Settings
from core.temporal_client import connect_temporal

# A long poll lasts about a minute on the server before it is renewed.
RECENT_SECONDS = 150
QUEUE_TYPES = {
    "workflow": TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    "activity": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
}


async def queues_not_polled(settings: Settings, host: str) -> list[str]:
    """The queue types ("workflow", "activity") that no poller from `host` polled lately."""
    client = await connect_temporal(settings)
    now = time.time()
    missing = []
    for name, queue_type in QUEUE_TYPES.items():
        described = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
            namespace=settings.temporal_namespace,
            task_queue=TaskQueue(name=settings.task_queue), task_queue_type=queue_type))
        ours = [p for p in described.pollers if p.identity.endswith(f"@{host}")
                and now - p.last_access_time.ToSeconds() < RECENT_SECONDS]
        if not ours:
            missing.append(name)
    return missing


def main() -> int:
    settings = Settings()
    host = socket.gethostname()
    try:
        missing = asyncio.run(asyncio.wait_for(queues_not_polled(settings, host), timeout=8))
    except Exception as exc:
        print(f"unhealthy: Temporal at {settings.temporal_address}: {exc!r}", file=sys.stderr)
        return 1
    if missing:
        print(f"unhealthy: no worker on {host} polls the {' and '.join(missing)} queue "
              f"of {settings.task_queue!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: a Temporal connect abandoned by the timeout can abort the interpreter's
    # shutdown (SIGABRT from the core runtime), which would turn "unhealthy" into a crash.
    os._exit(code)
