"""Reading incidents and tasks for the API: the Redis read model first, Temporal second.

The read model answers almost every read. If it lacks an incident (e.g. just after a Redis
`FLUSHALL`, before `crisis projection rebuild`), the workflow's `state`/`timeline` queries
fill in. Writes go to the workflow as updates; `execute_update` maps "no such workflow" to
404 and "workflow already closed" to 409 `IncidentClosed`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from domain import errors as codes
from domain.ids import INCIDENT_ID, incident_of_task
from domain.incident import IncidentView, Task, TimelineEntry
from readmodel.reader import ReadModel
from workflows.incident import IncidentWorkflow

from .errors import ApiError
from .idempotency import operation_id

QUERY_TIMEOUT = timedelta(seconds=10)  # a running incident's query needs a live worker


def request_id(person_id: str, idempotency_key: str | None) -> str:
    """The workflow-side request id of a command: stable for one caller's Idempotency-Key
    (the workflow answers a retry with its first result), else fresh."""
    return operation_id("http", person_id, idempotency_key)


async def _query_view(client: Client, incident_id: str) -> IncidentView | None:
    if not INCIDENT_ID.match(incident_id):
        return None
    handle = client.get_workflow_handle_for(IncidentWorkflow.run, incident_id)
    try:
        return await handle.query(IncidentWorkflow.state, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def incident_view(read_model: ReadModel, client: Client,
                        incident_id: str) -> IncidentView | None:
    view = await read_model.incident_view(incident_id)
    return view if view is not None else await _query_view(client, incident_id)


async def timeline(read_model: ReadModel, client: Client, incident_id: str) -> list[TimelineEntry]:
    entries = await read_model.timeline(incident_id)
    if entries:
        return entries
    handle = client.get_workflow_handle_for(IncidentWorkflow.run, incident_id)
    return await handle.query(IncidentWorkflow.timeline, rpc_timeout=QUERY_TIMEOUT)


async def task(read_model: ReadModel, client: Client, task_id: str) -> Task | None:
    found = await read_model.task(task_id)
    if found is not None:
        return found
    view = await _query_view(client, incident_of_task(task_id))
    if view is None:
        return None
    return next((t for t in view.tasks if t.id == task_id), None)


async def execute_update(client: Client, incident_id: str, update: Any, arg: Any) -> Any:
    """Run a workflow update on the incident's current run."""
    handle = client.get_workflow_handle(incident_id)
    try:
        return await handle.execute_update(update, arg)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        try:
            description = await handle.describe()
        except RPCError as inner:
            if inner.status == RPCStatusCode.NOT_FOUND:
                raise ApiError(404, f"no incident {incident_id}") from None
            raise
        if description.status != WorkflowExecutionStatus.RUNNING:
            raise ApiError(409, f"incident {incident_id} is closed",
                           codes.INCIDENT_CLOSED) from None
        raise
