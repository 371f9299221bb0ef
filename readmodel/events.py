"""Live events: what the projection writer announces after each batch, and how to follow it.

After a batch is written, one Lua script (inside the writer's MULTI/EXEC) appends a small
event to a bounded Redis stream, globally (`ce:stream:events`) and per incident
(`ce:stream:events:{id}`, the same entry id), then publishes it (its JSON, with that id) on the
pub/sub channels `ce:events` and `ce:events:{id}`. The stream id is the SSE event id:
a client that reconnects with `Last-Event-ID` gets what it missed from the stream (`replay`),
then the live feed. The event holds no incident text: subscribers re-read what they may see.

`EventHub` keeps one pub/sub connection per process and fans each event out to in-memory
queues, so 200 browsers on one incident cost one Redis subscription, not 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

import redis.asyncio as aioredis
import structlog
from pydantic import BaseModel, Field

from readmodel import keys
from readmodel.lua import queue_eval

log = structlog.get_logger(__name__)

CHANNEL = keys.EVENTS
STREAM = "ce:stream:events"
STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
DEFAULT_REPLAY = 1000


def incident_channel(incident_id: str) -> str:
    return keys.incident_events(incident_id)


def incident_stream(incident_id: str) -> str:
    return f"ce:stream:events:{incident_id}"


class LiveEvent(BaseModel):
    """Something changed in an incident; `id` is its stream id (the SSE event id)."""

    id: str = ""
    incident_id: str
    rev: int
    kinds: list[str] = Field(default_factory=list)
    assignees: list[str] = Field(default_factory=list, description="holders of changed tasks")
    tasks: list[str] = Field(default_factory=list, description="ids of changed tasks")
    answered: list[str] = Field(
        default_factory=list, description="request ids of the commands this batch answers "
        "(what `ReadModel.wait_answered` listens for; never sent to browsers)")


# KEYS[1] global stream, KEYS[2] incident stream, KEYS[3] global channel, KEYS[4] incident
# channel. ARGV[1] event JSON without id, ARGV[2] max stream length. Returns the id.
_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'e', ARGV[1])
redis.call('EXPIRE', KEYS[2], 604800)
local msg = '{"id":"' .. id .. '",' .. string.sub(ARGV[1], 2)
redis.call('PUBLISH', KEYS[3], msg)
redis.call('PUBLISH', KEYS[4], msg)
return id
"""


class Publisher:
    """Appends and publishes events, as part of the writer's transaction."""

    def __init__(self, replay: int = DEFAULT_REPLAY) -> None:
        self._replay = replay

    def queue(self, pipe: Any, event: LiveEvent) -> None:
        """Append and publish as part of the transaction `pipe` (`readmodel.lua`)."""
        queue_eval(pipe, _PUBLISH, self._keys(event), self._args(event))

    @staticmethod
    def _keys(event: LiveEvent) -> list[str]:
        return [STREAM, incident_stream(event.incident_id), CHANNEL,
                incident_channel(event.incident_id)]

    def _args(self, event: LiveEvent) -> list[str | int | float]:
        return [event.model_dump_json(exclude={"id"}), self._replay]


def parse_message(data: str) -> LiveEvent | None:
    """A pub/sub message (the event's JSON, with its stream id) as an event, or None."""
    try:
        event = LiveEvent.model_validate_json(data)
    except ValueError:
        return None
    return event if STREAM_ID.match(event.id) else None


def id_key(event_id: str) -> tuple[int, int]:
    ms, _, n = event_id.partition("-")
    return int(ms), int(n or 0)


async def replay(redis: aioredis.Redis, after: str, incident_id: str | None = None,
                 limit: int = DEFAULT_REPLAY) -> list[LiveEvent]:
    """Events after stream id `after` (exclusive), oldest first, at most `limit`."""
    if not STREAM_ID.match(after):
        return []
    stream = STREAM if incident_id is None else incident_stream(incident_id)
    rows: Any = await redis.xrange(stream, min=f"({after}", max="+", count=limit)
    out = []
    for event_id, fields in rows:
        with contextlib.suppress(ValueError):
            out.append(LiveEvent.model_validate({**json.loads(fields["e"]), "id": event_id}))
    return out


class Subscription:
    def __init__(self, incident_id: str | None, size: int) -> None:
        self.incident_id = incident_id
        self.queue: asyncio.Queue[LiveEvent] = asyncio.Queue(maxsize=size)
        self.overflowed = False

    def offer(self, event: LiveEvent) -> None:
        if self.incident_id is not None and event.incident_id != self.incident_id:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True  # a stuck client: its stream ends, it reconnects and replays


class EventHub:
    """One pub/sub subscription per process, fanned out to every local subscriber."""

    def __init__(self, redis: aioredis.Redis, queue_size: int = 1000) -> None:
        self._redis = redis
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._queue_size = queue_size

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    @property
    def listening(self) -> bool:
        """Subscribed to Redis now (False before the first connection and while reconnecting,
        when events can be missed)."""
        return self._ready.is_set()

    async def _run(self) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self._ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        event = parse_message(str(message["data"]))
                        if event is not None:
                            for sub in list(self._subs):
                                sub.offer(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: retry, subscribers replay on resume
                self._ready.clear()
                log.warning("event_hub_reconnect", error=str(exc))
                await asyncio.sleep(0.5)

    async def start(self, wait: float = 5) -> None:
        """Start listening (once); wait up to `wait` seconds until subscribed."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-hub")
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), wait)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.asynccontextmanager
    async def subscribe(self, incident_id: str | None = None, *,
                        wait: float = 5) -> AsyncIterator[Subscription]:
        await self.start(wait)
        sub = Subscription(incident_id, self._queue_size)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)


def affected_people(assignees: Iterable[str]) -> list[str]:
    return sorted(set(assignees))
