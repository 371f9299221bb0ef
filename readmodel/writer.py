"""Writes `ProjectionBatch`es from the incident workflow into the Redis read model.

Temporal is the source of truth; this projection can be replayed, reordered or rebuilt:
- the incident and each task are replaced only when the batch's `rev` is >= the stored one,
  and their indexes move with them, in one Lua script per document (atomic compare-and-set);
- a node is replaced only by a batch whose incident rev is >= the one that last wrote it;
- timeline entries are keyed by `seq`; an entry already stored under a seq is never duplicated;
- the request ids a batch answers are marked (`keys.answered`) in the same transaction, so
  a caller waiting for its command's read-your-writes sees the mark only with the changes;
- everything for one batch runs in one MULTI/EXEC, which ends by appending a small event
  to the live-event streams and publishing it on `ce:events` and `ce:events:{incident_id}`
  for live views (`readmodel.events`).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from domain.effects import ProjectionBatch
from domain.incident import Incident, IncidentStatus, Task, TaskState
from domain.playbook import Severity
from readmodel import keys
from readmodel.events import LiveEvent, Publisher
from readmodel.lua import queue_eval

# KEYS[1]: the document; KEYS[2 .. n_add+1]: index zsets that must hold the member;
# remaining KEYS: index zsets that must not. ARGV: rev, json, score, member, n_add.
_PUT_VERSIONED = """
local stored = redis.call('GET', KEYS[1])
if stored then
  local ok, old = pcall(cjson.decode, stored)
  if ok and type(old) == 'table' then
    local old_rev = tonumber(old['rev'])
    if old_rev and old_rev > tonumber(ARGV[1]) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[2])
local n_add = tonumber(ARGV[5])
for i = 2, #KEYS do
  if i <= n_add + 1 then
    redis.call('ZADD', KEYS[i], ARGV[3], ARGV[4])
  else
    redis.call('ZREM', KEYS[i], ARGV[4])
  end
end
return 1
"""

# KEYS[1]: nodes hash; KEYS[2]: node revs hash. ARGV: rev, then step_id, json pairs.
_PUT_NODES = """
local rev = tonumber(ARGV[1])
local written = 0
for i = 2, #ARGV, 2 do
  local old = tonumber(redis.call('HGET', KEYS[2], ARGV[i]))
  if not old or old <= rev then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[1])
    written = written + 1
  end
end
return written
"""

# KEYS[1]: timeline zset. ARGV: seq, json pairs. The first entry stored under a seq stays.
_ADD_TIMELINE = """
local added = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZCOUNT', KEYS[1], ARGV[i], ARGV[i]) == 0 then
    redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
    added = added + 1
  end
end
return added
"""


def _incident_indexes(incident: Incident) -> tuple[list[str], list[str]]:
    """(indexes that must list the incident, indexes that must not)."""
    return incident_index_keys(incident)


def _task_indexes(task: Task) -> tuple[list[str], list[str]]:
    return task_index_keys(task)


# ---- index maintenance: one zset per filter combination the API offers ------------------

def incident_index_keys(incident: Incident) -> tuple[list[str], list[str]]:
    """(indexes that must list the incident, indexes that must not).

    Every combination of status, severity and playbook (`keys.incident_index`): the incident
    is in exactly one index of each of the 8 combinations, and is removed from every index of
    a status or severity it no longer has (its playbook never changes), so no list ever has
    to walk entries of another status or severity."""
    playbook = incident.playbook.id
    statuses: list[str | None] = [None, *IncidentStatus]
    severities: list[str | None] = [None, *Severity]
    holds: list[str] = []
    lacks: list[str] = []
    for status in statuses:
        for severity in severities:
            current = status in (None, incident.status) and severity in (None, incident.severity)
            for playbook_id in (None, playbook):
                index = keys.incident_index(status, severity, playbook_id)
                (holds if current else lacks).append(index)
    return holds, lacks


def task_index_keys(task: Task) -> tuple[list[str], list[str]]:
    """(indexes that must list the task, indexes that must not): every task, its incident's
    tasks and its assignee's inbox, each also per state (`keys.task_index`). A task's
    assignee and incident never change (delegation makes a new task); its state does."""
    holds: list[str] = []
    lacks: list[str] = []
    for scope in ({}, {"assignee": task.assignee}, {"incident_id": task.incident_id}):
        holds.append(keys.task_index(**scope))
        for state in TaskState:
            (holds if state == task.state else lacks).append(keys.task_index(state, **scope))
    return holds, lacks


class ProjectionWriter:
    """Applies projection batches; safe to call twice, late, or out of order."""

    def __init__(self, redis: aioredis.Redis, replay_events: int = 1000) -> None:
        self._redis = redis
        self._events = Publisher(replay_events)

    async def apply(self, batch: ProjectionBatch) -> None:
        incident = batch.incident
        async with self._redis.pipeline(transaction=True) as pipe:
            holds, lacks = _incident_indexes(incident)
            queue_eval(pipe, _PUT_VERSIONED, [keys.incident(incident.id), *holds, *lacks],
                       [incident.rev, incident.model_dump_json(),
                        keys.epoch(incident.opened_at), incident.id, len(holds)])
            for task in batch.tasks:
                holds, lacks = _task_indexes(task)
                queue_eval(pipe, _PUT_VERSIONED, [keys.task(task.id), *holds, *lacks],
                           [task.rev, task.model_dump_json(), keys.epoch(task.created_at),
                            task.id, len(holds)])
            if batch.nodes:
                node_args: list[str | int] = [incident.rev]
                for node in batch.nodes:
                    node_args += [node.step_id, node.model_dump_json()]
                queue_eval(pipe, _PUT_NODES, [keys.incident_nodes(incident.id),
                                              keys.incident_node_revs(incident.id)], node_args)
            if batch.timeline:
                entry_args: list[str | int] = []
                for entry in batch.timeline:
                    entry_args += [entry.seq, entry.model_dump_json()]
                queue_eval(pipe, _ADD_TIMELINE, [keys.incident_timeline(incident.id)],
                           entry_args)
            for request_id in batch.answered:
                pipe.set(keys.answered(incident.id, request_id), incident.rev,
                         ex=keys.ANSWERED_TTL_SECONDS)
            self._events.queue(pipe, LiveEvent(
                incident_id=incident.id, rev=incident.rev,
                kinds=list(dict.fromkeys(entry.kind for entry in batch.timeline)),
                assignees=sorted({task.assignee for task in batch.tasks}),
                tasks=[task.id for task in batch.tasks], answered=list(batch.answered)))
            await pipe.execute()

    async def clear(self) -> int:
        """Delete every read-model key; return how many were deleted.

        Idempotency records, auth, intake dedup and notification feeds are kept.
        """
        deleted = 0
        for pattern in keys.READ_MODEL_PATTERNS:
            batch: list[str] = []
            async for key in self._redis.scan_iter(match=pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(await self._redis.unlink(*batch))
                    batch = []
            if batch:
                deleted += int(await self._redis.unlink(*batch))
        return deleted
