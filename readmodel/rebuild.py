"""Rebuild every Redis read model from Temporal, the source of truth.

Lists every `IncidentWorkflow` by visibility, then for each incident id (the latest run,
following continue-as-new) takes either the result of a resolved incident (no worker
needed) or the `state` and `timeline` queries of a running one, and writes one full
`ProjectionBatch`. The writer's revision checks make this safe while workflows keep
writing: a rebuild never overwrites a newer document with an older one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

import redis.asyncio as aioredis
import structlog
from temporalio.client import Client, WorkflowExecutionStatus

from domain.effects import ProjectionBatch
from domain.incident import Incident, IncidentView, Task, TimelineEntry
from readmodel import keys
from readmodel.writer import ProjectionWriter, incident_index_keys, task_index_keys
from workflows.incident import IncidentWorkflow

log = structlog.get_logger(__name__)

VISIBILITY_QUERY = "WorkflowType = 'IncidentWorkflow'"
QUERY_TIMEOUT = timedelta(seconds=15)  # a running incident's query needs a live worker


@dataclass
class ReindexReport:
    incidents: int = 0
    tasks: int = 0
    unreadable: list[str] = field(default_factory=list)  # keys whose JSON did not parse


@dataclass
class RebuildReport:
    cleared_keys: int = 0
    incidents: int = 0
    tasks: int = 0
    timeline_entries: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # incident id -> why


async def incident_ids(client: Client, task_queue: str | None = None) -> list[str]:
    """Every incident workflow id (on `task_queue`, if given), once each: continue-as-new
    runs share an id."""
    query = VISIBILITY_QUERY
    if task_queue is not None:
        query += " AND TaskQueue = '" + task_queue.replace("'", "") + "'"
    ids: dict[str, None] = {}
    async for execution in client.list_workflows(query):
        ids.setdefault(execution.id, None)
    return list(ids)


async def incident_snapshot(client: Client,
                            incident_id: str) -> tuple[IncidentView, list[TimelineEntry]]:
    handle = client.get_workflow_handle_for(IncidentWorkflow.run, incident_id)
    description = await handle.describe()
    if description.status == WorkflowExecutionStatus.COMPLETED:
        final = await handle.result()
        return final.view, final.timeline
    view = await handle.query(IncidentWorkflow.state, rpc_timeout=QUERY_TIMEOUT)
    timeline = await handle.query(IncidentWorkflow.timeline, rpc_timeout=QUERY_TIMEOUT)
    return view, timeline


async def rebuild(client: Client, redis: aioredis.Redis, *, task_queue: str | None = None,
                  clear: bool = False, concurrency: int = 8) -> RebuildReport:
    """Write every incident's full state to the read model; `clear` empties it first.

    `task_queue` limits the rebuild to the incidents of one deployment (the API's
    `Settings.task_queue`) when several share a Temporal namespace."""
    writer = ProjectionWriter(redis)
    report = RebuildReport()
    if clear:
        report.cleared_keys = await writer.clear()
    limit = asyncio.Semaphore(concurrency)

    async def one(incident_id: str) -> None:
        async with limit:
            try:
                view, timeline = await incident_snapshot(client, incident_id)
                await writer.apply(ProjectionBatch(incident=view.incident, tasks=view.tasks,
                                                   nodes=view.nodes, timeline=timeline))
            except Exception as exc:  # one broken incident must not stop the others
                log.warning("rebuild_failed", incident_id=incident_id, error=str(exc))
                report.failed[incident_id] = f"{type(exc).__name__}: {exc}"
                return
            report.incidents += 1
            report.tasks += len(view.tasks)
            report.timeline_entries += len(timeline)

    await asyncio.gather(*(one(i) for i in await incident_ids(client, task_queue)))
    return report


REINDEX_CHUNK = 500


async def reindex(redis: aioredis.Redis) -> ReindexReport:
    """Put every stored incident and task document into exactly the index zsets of its
    current fields (`readmodel.writer.incident_index_keys` / `task_index_keys`), from what
    Redis already holds, without Temporal: for a read model written before an index
    existed (an upgrade), or one whose indexes were damaged. `rebuild` writes the indexes
    too, as part of every document it writes."""
    report = ReindexReport()
    for pattern, placing, count in (("ce:incident:*", _incident_placing, "incidents"),
                                    ("ce:task:*", _task_placing, "tasks")):
        names: list[str] = []
        async for name in redis.scan_iter(match=pattern, count=REINDEX_CHUNK):
            text = name.decode() if isinstance(name, bytes) else name
            if text.count(":") == 2:  # the document itself, not `ce:incident:{id}:nodes`...
                names.append(text)
        for start in range(0, len(names), REINDEX_CHUNK):
            chunk = names[start:start + REINDEX_CHUNK]
            raws = await redis.mget(chunk)
            async with redis.pipeline(transaction=False) as pipe:
                for name, raw in zip(chunk, raws, strict=True):
                    if raw is None:
                        continue
                    try:
                        member, score, (holds, lacks) = placing(raw)
                    except ValueError:
                        report.unreadable.append(name)
                        continue
                    for index in holds:
                        pipe.zadd(index, {member: score})
                    for index in lacks:
                        pipe.zrem(index, member)
                    setattr(report, count, getattr(report, count) + 1)
                await pipe.execute()
    return report


Placing = tuple[str, float, tuple[list[str], list[str]]]


def _incident_placing(raw: str | bytes) -> Placing:
    incident = Incident.model_validate_json(raw)
    return incident.id, keys.epoch(incident.opened_at), incident_index_keys(incident)


def _task_placing(raw: str | bytes) -> Placing:
    task = Task.model_validate_json(raw)
    return task.id, keys.epoch(task.created_at), task_index_keys(task)
