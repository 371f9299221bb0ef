"""Queries over the Redis read model: incidents, their views and timelines, tasks and inboxes.

Listings are newest first and paginate with an opaque keyset cursor (the last item's score
and id), so items inserted while a client pages never cause duplicates or gaps among the
items that existed. Each query reads the one index zset of its combination of filters
(`keys.incident_index`, `keys.task_index`, maintained by the writer), so a first page costs
one range read and one MGET whatever the data size, including for filters that match
nothing; every filter is still re-checked against the stored document, so a stale index
entry can never leak a wrong item. Timelines page by `seq` (`timeline_page`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import RedisError

from domain.incident import (
    Incident,
    IncidentStatus,
    IncidentView,
    NodeState,
    Task,
    TaskState,
    TimelineEntry,
)
from domain.playbook import Severity
from readmodel import keys
from readmodel.events import EventHub, Subscription

Model = TypeVar("Model", bound=BaseModel)
Position = tuple[float, str]  # (score, member): the keyset position of a listing
MAX_LIMIT = 500
MAX_TIMELINE_LIMIT = 1000
_MAX_CHUNK = 1000  # index entries read per round trip, at most (unless scores tie)


def encode_cursor(position: Position) -> str:
    raw = f"{position[0]!r}:{position[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """Inverse of `encode_cursor`; raises ValueError("invalid cursor") on anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score_text, member = raw.split(":", 1)
        score = float(score_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("invalid cursor") from None
    if not math.isfinite(score) or not member:
        raise ValueError("invalid cursor")
    return score, member


def timeline_cursor(seq: int) -> str:
    """The opaque cursor of a timeline page that ends at `seq`."""
    return encode_cursor((float(seq), "timeline"))


def timeline_seq(cursor: str) -> int:
    """Inverse of `timeline_cursor`; raises ValueError("invalid cursor") on anything else."""
    score, member = decode_cursor(cursor)
    if member != "timeline" or not score.is_integer() or score < 0:
        raise ValueError("invalid cursor")
    return int(score)


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")


ANSWER_POLL_FIRST = 0.001  # seconds; a projection write takes a few milliseconds
ANSWER_POLL_MAX = 0.02
# With a listening `EventHub` the waiter is woken by the batch's live event; the mark is
# re-read this often only in case pub/sub lost that event (a reconnect, a full queue).
ANSWER_RECHECK = 0.25


class ReadModel:
    """Read-only access to what `ProjectionWriter` stored.

    `hub`, the process's live-event subscription, lets `wait_answered` be woken by the
    writer's event instead of polling Redis (what the API and the workers' tools pass)."""

    def __init__(self, redis: aioredis.Redis, hub: EventHub | None = None) -> None:
        self._redis = redis
        self._hub = hub

    # ---- read-your-writes -------------------------------------------------------------

    async def wait_answered(self, incident_id: str, request_id: str, *,
                            within: float) -> bool:
        """Wait until the projection carries the command `request_id` (the writer marks it
        with the batch that holds its changes, and names it in that batch's live event).
        The mark is the truth: it is read once listening (so a batch that landed first
        counts), then after every wake-up. A listening hub wakes the waiter when the event
        arrives; without one (or while it reconnects) the mark is polled from 1 ms, backing
        off to 20 ms. False after `within` seconds, or at once if Redis can't be reached
        (the command is committed in Temporal either way; the projection catches up)."""
        key = keys.answered(incident_id, request_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        poll = ANSWER_POLL_FIRST
        try:
            async with self._events(incident_id) as events:
                while not await self._redis.exists(key):
                    left = deadline - loop.time()
                    if left <= 0:
                        return False
                    if events is not None and self._hub is not None and self._hub.listening:
                        if await _heard(events, request_id, min(ANSWER_RECHECK, left)):
                            return True
                    else:
                        await asyncio.sleep(min(poll, left))
                        poll = min(ANSWER_POLL_MAX, poll * 1.5)
        except RedisError:
            return False
        return True

    @asynccontextmanager
    async def _events(self, incident_id: str) -> AsyncIterator[Subscription | None]:
        if self._hub is None:
            yield None
            return
        async with self._hub.subscribe(incident_id, wait=0) as subscription:
            yield subscription

    # ---- incidents --------------------------------------------------------------------

    async def incident(self, incident_id: str) -> Incident | None:
        raw = await self._redis.get(keys.incident(incident_id))
        return None if raw is None else Incident.model_validate_json(raw)

    async def incident_view(self, incident_id: str) -> IncidentView | None:
        """The incident, its tasks in creation order and its approval nodes."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.incident(incident_id))
            pipe.zrange(keys.incident_tasks(incident_id), 0, -1)
            pipe.hvals(keys.incident_nodes(incident_id))
            raw_incident, task_ids, raw_nodes = await pipe.execute()
        if raw_incident is None:
            return None
        tasks = await self._load(Task, keys.task, [_text(task_id) for task_id in task_ids])
        nodes = sorted((NodeState.model_validate_json(raw) for raw in raw_nodes),
                       key=lambda node: (node.opened_at, node.step_id))
        return IncidentView(incident=Incident.model_validate_json(raw_incident),
                            tasks=[task for task in tasks if task is not None], nodes=nodes)

    async def timeline(self, incident_id: str) -> list[TimelineEntry]:
        """Every entry, oldest first (by seq)."""
        raws: list[Any] = await self._redis.zrange(keys.incident_timeline(incident_id), 0, -1)
        return [TimelineEntry.model_validate_json(raw) for raw in raws]

    async def timeline_page(self, incident_id: str, *, cursor: str | None = None,
                            limit: int = 500) -> tuple[list[TimelineEntry], str | None]:
        """Entries oldest first (by seq), strictly after `cursor`'s seq; returns a page and
        the cursor of the next one (None on the last page). Seqs are unique and only grow,
        so paging returns every entry exactly once, even while entries are appended."""
        if not 1 <= limit <= MAX_TIMELINE_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_TIMELINE_LIMIT}")
        after = "-inf" if cursor is None else f"({timeline_seq(cursor)}"
        raws: list[Any] = await self._redis.zrangebyscore(
            keys.incident_timeline(incident_id), after, "+inf", start=0, num=limit + 1)
        entries = [TimelineEntry.model_validate_json(raw) for raw in raws[:limit]]
        more = len(raws) > limit
        return entries, timeline_cursor(entries[-1].seq) if more else None

    async def list_incidents(
        self, *, status: IncidentStatus | None = None, severity: Severity | None = None,
        playbook: str | None = None, opened_after: datetime | None = None,
        opened_before: datetime | None = None, cursor: str | None = None, limit: int = 50,
    ) -> tuple[list[Incident], str | None]:
        """Newest first. `opened_after` is inclusive, `opened_before` exclusive.

        Returns a page and the cursor of the next one (None on the last page).
        """
        _check_limit(limit)
        # one index per combination of filters (`keys.incident_index`): no filter scans
        index = keys.incident_index(status, severity, playbook)

        def wanted(incident: Incident) -> bool:
            return ((status is None or incident.status == status)
                    and (severity is None or incident.severity == severity)
                    and (playbook is None or incident.playbook.id == playbook))

        top = "+inf" if opened_before is None else f"({keys.epoch(opened_before)!r}"
        bottom = "-inf" if opened_after is None else repr(keys.epoch(opened_after))
        return await self._page(index, Incident, keys.incident, wanted, top, bottom, cursor,
                                limit)

    # ---- tasks ------------------------------------------------------------------------

    async def task(self, task_id: str) -> Task | None:
        raw = await self._redis.get(keys.task(task_id))
        return None if raw is None else Task.model_validate_json(raw)

    async def list_tasks(
        self, *, assignee: str | None = None, state: TaskState | None = None,
        incident_id: str | None = None, cursor: str | None = None, limit: int = 50,
    ) -> tuple[list[Task], str | None]:
        """Newest first. With `assignee` this is the person's inbox: every task they were
        ever given (delegated, decided, cancelled...) unless `state` narrows it."""
        _check_limit(limit)
        # one index per combination (`keys.task_index`); only an assignee within one
        # incident is filtered while walking that incident's (state's) tasks
        index = keys.task_index(state, None if incident_id is not None else assignee,
                                incident_id)

        def wanted(task: Task) -> bool:
            return ((assignee is None or task.assignee == assignee)
                    and (state is None or task.state == state)
                    and (incident_id is None or task.incident_id == incident_id))

        return await self._page(index, Task, keys.task, wanted, "+inf", "-inf", cursor, limit)

    # ---- helpers ----------------------------------------------------------------------

    async def _load(self, model: type[Model], key_of: Callable[[str], str],
                    ids: list[str]) -> list[Model | None]:
        if not ids:
            return []
        raws = await self._redis.mget([key_of(item_id) for item_id in ids])
        return [None if raw is None else model.model_validate_json(raw) for raw in raws]

    async def _page(self, index: str, model: type[Model], key_of: Callable[[str], str],
                    wanted: Callable[[Model], bool], top: str, bottom: str,
                    cursor: str | None, limit: int) -> tuple[list[Model], str | None]:
        after = None if cursor is None else decode_cursor(cursor)
        page: list[Model] = []
        positions: list[Position] = []
        walk = self._walk_desc(index, top, bottom, after, chunk_size=limit + 1)
        async with aclosing(walk) as chunks:
            async for chunk in chunks:
                items = await self._load(model, key_of, [member for _, member in chunk])
                for position, item in zip(chunk, items, strict=True):
                    if item is None or not wanted(item):
                        continue
                    if len(page) == limit:  # one more exists: there is a next page
                        return page, encode_cursor(positions[-1])
                    page.append(item)
                    positions.append(position)
        return page, None

    async def _walk_desc(self, index: str, top: str, bottom: str, after: Position | None,
                         chunk_size: int) -> AsyncGenerator[list[Position], None]:
        """Yield (score, member) chunks of `index` in descending order, strictly after
        `after` and within [bottom, top], using keyset positions rather than offsets, so
        concurrent inserts never shift what is left to read."""
        while True:
            high = top if after is None or after[0] >= _bound(top) else repr(after[0])
            rows: list[Any] = await self._redis.zrevrangebyscore(
                index, high, bottom, start=0, num=chunk_size, withscores=True)
            exhausted = len(rows) < chunk_size
            positions = [(float(score), _text(member)) for member, score in rows]
            fresh = [p for p in positions if after is None or p < after]
            if fresh:
                yield fresh
                after = fresh[-1]
                # Filters dropped items if we are still here: read further ahead next time.
                chunk_size = min(chunk_size * 2, _MAX_CHUNK)
            elif not exhausted:
                chunk_size *= 2  # a run of equal scores longer than the chunk: widen
            if exhausted:
                return


def _text(value: str | bytes) -> str:
    """Redis replies are str with `decode_responses=True`, bytes otherwise."""
    return value.decode() if isinstance(value, bytes) else value


def _bound(top: str) -> float:
    """The numeric value of a ZRANGEBYSCORE upper bound such as "+inf" or "(12.5"."""
    return float(top.lstrip("("))


async def _heard(events: Subscription, request_id: str, within: float) -> bool:
    """True once a live event names `request_id`; False after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while request_id not in (await events.queue.get()).answered:
                pass
    except TimeoutError:
        return False
    return True
