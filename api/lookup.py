"""Reading incidents and tasks for the API: the Redis read model first, Temporal second.

The read model answers almost every read. If it lacks an incident (e.g. just after a Redis
`FLUSHALL`, before `crisis projection rebuild`), the workflow's `state`/`timeline` queries
fill in. Writes go to the workflow as updates; `execute_update` maps "no such workflow" to
404 and "workflow already closed" to 409 `IncidentClosed`. Every update is signed on its way
out by the client's `core.actor_signing.ActorSigner` (the one signing seam).

No existence oracle: `readable_incident` and `visible_task` answer a caller who may not see
an incident exactly as for an incident that does not exist (the same 404 and body), after
the same work: an unknown id costs a Temporal round trip (the read model misses, the query
finds nothing), so a hidden one pays an equal round trip (`_as_costly_as_unknown`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from core.current_run import update_current_run
from domain import errors as codes
from domain.directory import AccessRole
from domain.ids import INCIDENT_ID, incident_of_task
from domain.incident import IncidentView, Task, TimelineEntry
from readmodel.reader import ReadModel
from workflows.incident import IncidentWorkflow

from . import auth
from .auth import Principal
from .errors import ApiError
from .idempotency import operation_id

log = structlog.get_logger(__name__)

QUERY_TIMEOUT = timedelta(seconds=10)  # a running incident's query needs a live worker
# How long a command's answer waits for the read model to show it; past this the API answers
# anyway (the change is committed in Temporal, and the projection catches up by itself).
# (A worker older than this API writes no marks: deploy workers first, or each command
# takes this long.)
ANSWER_WAIT = timedelta(seconds=5)


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
    found, _ = await _task_and_view(read_model, client, task_id)
    return found


async def _task_and_view(read_model: ReadModel, client: Client, task_id: str
                         ) -> tuple[Task | None, IncidentView | None]:
    """The task, and its incident's view when it had to be read. Temporal is asked only if
    the read model lacks the whole incident (a known incident has all its tasks there)."""
    found = await read_model.task(task_id)
    if found is not None:
        return found, None
    view = await incident_view(read_model, client, incident_of_task(task_id))
    if view is None:
        return None, None
    return next((t for t in view.tasks if t.id == task_id), None), view


# ---- authorization answers (no existence oracle) ---------------------------------------------

DECOY_ID = "inc-decoy-never-opened"  # matches INCIDENT_ID; no id generator makes it


async def _as_costly_as_unknown(client: Client) -> None:
    """The Temporal round trip an unknown id costs (a query that finds no workflow)."""
    try:
        await _query_view(client, DECOY_ID)
    except RPCError:
        pass


def incident_not_found(incident_id: str) -> ApiError:
    return ApiError(404, f"no incident {incident_id}")


def task_not_found(task_id: str) -> ApiError:
    return ApiError(404, f"no task {task_id}", codes.TASK_NOT_FOUND)


async def readable_incident(user: Principal, read_model: ReadModel, client: Client,
                            incident_id: str) -> IncidentView:
    """The incident's view if the caller may read it. 403 for a role that reads no incident
    at all (whatever the id); 404 both for an unknown incident and for one the caller may
    not see (an approver without a task in it), with the same body."""
    if not user.has_any(auth.INCIDENT_READERS | {AccessRole.approver}):
        raise ApiError(403, "reading incidents needs the communicator, leader or admin role "
                            "(or a task in the incident)")
    view = await read_model.incident_view(incident_id)
    if view is None:
        view = await _query_view(client, incident_id)
    elif not auth.can_read_incident(user, view):
        await _as_costly_as_unknown(client)
    if view is None or not auth.can_read_incident(user, view):
        raise incident_not_found(incident_id)
    return view


async def visible_task(user: Principal, read_model: ReadModel, client: Client,
                       task_id: str) -> Task:
    """The task if the caller may see it: its holder, a task reader, or anyone who may read
    its incident (a deputy acting on the original task id). Otherwise 404 `TaskNotFound`,
    the same as for a task or incident that does not exist."""
    found, view = await _task_and_view(read_model, client, task_id)
    if found is not None and auth.can_read_task(user, found):
        return found
    if found is not None:
        view = view or await read_model.incident_view(found.incident_id)
        if view is not None and auth.can_read_incident(user, view):
            return found
        await _as_costly_as_unknown(client)
    elif view is not None and not auth.can_read_incident(user, view):
        await _as_costly_as_unknown(client)  # a known incident, an unknown task
    raise task_not_found(task_id)


async def readable_task(user: Principal, read_model: ReadModel, client: Client,
                        task_id: str) -> Task:
    """`visible_task`, and 403 `NotYourTask` for a visible task the caller may not read
    (someone else's task in an incident the caller already sees)."""
    found = await visible_task(user, read_model, client, task_id)
    if not auth.can_read_task(user, found):
        raise ApiError(403, f"task {task_id} is assigned to someone else", codes.NOT_YOUR_TASK)
    return found


async def execute_update(client: Client, read_model: ReadModel, incident_id: str,
                         update: Any, arg: Any) -> Any:
    """Run a workflow update on the incident's current run, and return once the read model
    shows it (read-your-writes: the workflow answers first, then projects; see
    `IncidentWorkflow._answer`; runs started before that project first, and their batch
    names the request too, so the wait ends at once). Past `ANSWER_WAIT` it answers anyway."""
    result = await _execute_update(client, incident_id, update, arg)
    if not await read_model.wait_answered(incident_id, arg.request_id,
                                          within=ANSWER_WAIT.total_seconds()):
        log.warning("answered_before_projection", incident_id=incident_id,
                    request_id=arg.request_id)
    return result


async def _execute_update(client: Client, incident_id: str, update: Any, arg: Any) -> Any:
    handle = client.get_workflow_handle(incident_id)
    try:
        return await update_current_run(handle, update, arg)
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
