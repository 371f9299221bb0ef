"""The Redis read model: projection writes read back, order safety, listings and clearing."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from domain.effects import ProjectionBatch
from domain.incident import (
    Incident,
    IncidentStatus,
    NodeState,
    PlaybookRef,
    Task,
    TaskState,
    TimelineEntry,
    TimelineKind,
)
from domain.playbook import Severity
from domain.quorum import Outcome
from readmodel.events import EventHub
from readmodel.reader import ReadModel
from readmodel.writer import ProjectionWriter
from tests.servers import free_port

T0 = datetime(2025, 3, 7, 17, 40, tzinfo=UTC)


def make_incident(incident_id: str = "inc-1", *, rev: int = 1, minutes: float = 0,
                  severity: Severity = Severity.high, playbook: str = "viral-complaint",
                  status: IncidentStatus = IncidentStatus.open, **extra: Any) -> Incident:
    return Incident(id=incident_id, title=f"Incident {incident_id}", summary="A post spreads",
                    severity=severity, opened_by="dana", opened_at=T0 + timedelta(minutes=minutes),
                    status=status, playbook=PlaybookRef(id=playbook, version=2, sha256="0f" * 32),
                    rev=rev, **extra)


def make_task(task_id: str, *, incident_id: str = "inc-1", assignee: str = "alice",
              minutes: float = 0, state: TaskState = TaskState.open, rev: int = 1,
              **extra: Any) -> Task:
    return Task(id=task_id, incident_id=incident_id, node_id="holding", title="Approve statement",
                content="We are aware and looking into it.", assignee=assignee, role="legal",
                state=state, created_at=T0 + timedelta(minutes=minutes), rev=rev, **extra)


def make_node(outcome: Outcome = Outcome.pending) -> NodeState:
    return NodeState(step_id="holding", title="Holding statement",
                     policy="1 of legal AND 2 of comms-lead; veto: legal", outcome=outcome,
                     opened_at=T0)


def entry(seq: int, kind: TimelineKind = "opened", actor: str = "dana") -> TimelineEntry:
    return TimelineEntry(seq=seq, at=T0 + timedelta(seconds=seq), kind=kind, actor=actor,
                         details={"seq": seq})


@pytest.fixture
def writer(redis_client: aioredis.Redis) -> ProjectionWriter:
    return ProjectionWriter(redis_client)


@pytest.fixture
def reader(redis_client: aioredis.Redis) -> ReadModel:
    return ReadModel(redis_client)


async def test_batch_reads_back_as_view_and_timeline(writer: ProjectionWriter,
                                                    reader: ReadModel) -> None:
    incident = make_incident()
    later, earlier = make_task("t-2", minutes=2, assignee="bob"), make_task("t-1", minutes=1)
    await writer.apply(ProjectionBatch(
        incident=incident, tasks=[later, earlier], nodes=[make_node()],
        timeline=[entry(2, "task_created"), entry(1, "opened")]))

    view = await reader.incident_view("inc-1")

    assert view is not None
    assert view.incident == incident
    assert [task.id for task in view.tasks] == ["t-1", "t-2"]  # creation order
    assert view.nodes == [make_node()]
    assert [e.kind for e in await reader.timeline("inc-1")] == ["opened", "task_created"]
    assert await reader.task("t-2") == later
    assert await reader.incident("nope") is None
    assert await reader.incident_view("nope") is None
    assert await reader.task("nope") is None


async def test_older_revisions_never_overwrite_newer(writer: ProjectionWriter,
                                                    reader: ReadModel) -> None:
    resolved = make_incident(rev=5, status=IncidentStatus.resolved, resolved_by="dana",
                             resolved_at=T0 + timedelta(hours=3))
    approved = make_task("t-1", state=TaskState.approved, rev=2, decided_by="alice")
    await writer.apply(ProjectionBatch(incident=resolved, tasks=[approved],
                                       nodes=[make_node(Outcome.approved)]))
    # A late retry of an older batch arrives afterwards.
    await writer.apply(ProjectionBatch(incident=make_incident(rev=3), tasks=[make_task("t-1")],
                                       nodes=[make_node(Outcome.pending)]))

    view = await reader.incident_view("inc-1")
    assert view is not None
    assert view.incident == resolved
    assert view.tasks == [approved]
    assert view.nodes[0].outcome == Outcome.approved
    # The indexes follow the surviving revision too.
    assert (await reader.list_incidents(status=IncidentStatus.open))[0] == []
    assert (await reader.list_incidents(status=IncidentStatus.resolved))[0] == [resolved]
    assert (await reader.list_tasks(state=TaskState.open))[0] == []
    assert (await reader.list_tasks(state=TaskState.approved))[0] == [approved]


async def test_replayed_batches_do_not_duplicate_the_timeline(writer: ProjectionWriter,
                                                             reader: ReadModel) -> None:
    first = ProjectionBatch(incident=make_incident(rev=1), timeline=[entry(1), entry(2)])
    second = ProjectionBatch(incident=make_incident(rev=2),
                             timeline=[entry(2), entry(3, "decision", "alice")])
    for batch in (first, first, second, first, second):
        await writer.apply(batch)

    assert [e.seq for e in await reader.timeline("inc-1")] == [1, 2, 3]


async def test_each_batch_publishes_a_live_event(writer: ProjectionWriter,
                                                 redis_client: aioredis.Redis) -> None:
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe("ce:events:inc-1", "ce:events")
        for _ in range(2):  # subscription confirmations
            await pubsub.get_message(timeout=1.0)
        await writer.apply(ProjectionBatch(
            incident=make_incident(rev=4),
            timeline=[entry(7, "decision"), entry(8, "node_outcome"), entry(9, "decision")]))
        received = [await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    for _ in range(2)]

    assert {message["channel"] for message in received if message} == {
        "ce:events", "ce:events:inc-1"}
    ids = set()
    for message in received:
        assert message is not None
        event = json.loads(message["data"])
        ids.add(event.pop("id"))
        assert event == {"incident_id": "inc-1", "rev": 4, "kinds": ["decision", "node_outcome"],
                         "assignees": [], "tasks": [], "answered": []}
    assert len(ids) == 1  # one event, one stream id on both channels


async def test_events_replay_after_a_last_event_id(writer: ProjectionWriter,
                                                   redis_client: aioredis.Redis) -> None:
    from readmodel.events import replay
    for rev in (1, 2, 3):
        await writer.apply(ProjectionBatch(incident=make_incident(rev=rev), timeline=[]))
    await writer.apply(ProjectionBatch(incident=make_incident("inc-2", rev=1), timeline=[]))
    everything = await replay(redis_client, "0-0")
    assert [(e.incident_id, e.rev) for e in everything] == [
        ("inc-1", 1), ("inc-1", 2), ("inc-1", 3), ("inc-2", 1)]
    after_first = await replay(redis_client, everything[0].id, incident_id="inc-1")
    assert [e.rev for e in after_first] == [2, 3]
    assert await replay(redis_client, "not-an-id") == []


async def seed_incidents(writer: ProjectionWriter, count: int) -> list[Incident]:
    incidents = [
        make_incident(f"inc-{n:03d}", minutes=n,
                      severity=[Severity.low, Severity.high, Severity.critical][n % 3],
                      playbook="data-breach" if n % 4 == 0 else "viral-complaint",
                      status=IncidentStatus.resolved if n % 5 == 0 else IncidentStatus.open)
        for n in range(count)
    ]
    await asyncio.gather(*(writer.apply(ProjectionBatch(incident=i)) for i in incidents))
    return incidents


async def all_pages(reader: ReadModel, limit: int, **filters: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        page, cursor = await reader.list_incidents(limit=limit, cursor=cursor, **filters)
        pages.append([incident.id for incident in page])
        if cursor is None:
            return pages


async def test_listing_pages_newest_first_without_gaps(writer: ProjectionWriter,
                                                       reader: ReadModel) -> None:
    incidents = await seed_incidents(writer, 30)
    newest_first = [i.id for i in reversed(incidents)]

    pages = await all_pages(reader, limit=7)

    assert [len(page) for page in pages] == [7, 7, 7, 7, 2]
    assert [incident_id for page in pages for incident_id in page] == newest_first


@pytest.mark.parametrize("filters", [
    {"status": IncidentStatus.open},
    {"severity": Severity.critical},
    {"playbook": "data-breach"},
    {"status": IncidentStatus.resolved, "severity": Severity.low},
    {"playbook": "viral-complaint", "status": IncidentStatus.open, "severity": Severity.high},
    {"opened_after": T0 + timedelta(minutes=10), "opened_before": T0 + timedelta(minutes=20)},
    {"severity": Severity.high, "opened_before": T0 + timedelta(minutes=15)},
])
async def test_listing_filters_match_every_field(writer: ProjectionWriter, reader: ReadModel,
                                                 filters: dict[str, Any]) -> None:
    incidents = await seed_incidents(writer, 30)

    def wanted(i: Incident) -> bool:
        return bool(i.status == filters.get("status", i.status)
                and i.severity == filters.get("severity", i.severity)
                and i.playbook.id == filters.get("playbook", i.playbook.id)
                and i.opened_at >= filters.get("opened_after", i.opened_at)
                and i.opened_at < filters.get("opened_before", i.opened_at + timedelta(1)))

    expected = [i.id for i in reversed(incidents) if wanted(i)]
    assert expected  # the seed covers every filter
    pages = await all_pages(reader, limit=3, **filters)
    assert [incident_id for page in pages for incident_id in page] == expected


async def test_cursor_is_stable_while_incidents_arrive(writer: ProjectionWriter,
                                                       reader: ReadModel) -> None:
    incidents = await seed_incidents(writer, 20)
    first, cursor = await reader.list_incidents(limit=5)
    # New incidents open (newer than everything) and a late one lands in the middle.
    await writer.apply(ProjectionBatch(incident=make_incident("inc-new", minutes=100)))
    await writer.apply(ProjectionBatch(incident=make_incident("inc-mid", minutes=7.5)))
    seen = [i.id for i in first]
    while cursor is not None:
        page, cursor = await reader.list_incidents(limit=5, cursor=cursor)
        seen += [i.id for i in page]

    existing = [i.id for i in reversed(incidents)]
    assert [incident_id for incident_id in seen if incident_id != "inc-mid"] == existing
    assert "inc-new" not in seen  # it sorts before the page already read
    assert seen.count("inc-mid") == 1


async def test_many_incidents_opened_at_the_same_instant(writer: ProjectionWriter,
                                                         reader: ReadModel) -> None:
    ids = [f"same-{n:03d}" for n in range(230)]
    for incident_id in ids:
        await writer.apply(ProjectionBatch(incident=make_incident(incident_id)))

    pages = await all_pages(reader, limit=120)

    assert [len(page) for page in pages] == [120, 110]
    assert [incident_id for page in pages for incident_id in page] == sorted(ids, reverse=True)


@pytest.mark.parametrize("cursor", [
    "not a cursor!", "", base64.urlsafe_b64encode(b"no-colon").decode(),
    base64.urlsafe_b64encode(b"nan:inc-1").decode(), base64.urlsafe_b64encode(b"1.5:").decode(),
])
async def test_invalid_cursor_is_refused(reader: ReadModel, cursor: str) -> None:
    with pytest.raises(ValueError, match="invalid cursor"):
        await reader.list_incidents(cursor=cursor)
    with pytest.raises(ValueError, match="invalid cursor"):
        await reader.list_tasks(cursor=cursor)


async def test_inbox_keeps_history_and_filters_by_state(writer: ProjectionWriter,
                                                        reader: ReadModel) -> None:
    incident = make_incident()
    await writer.apply(ProjectionBatch(incident=incident, tasks=[
        make_task("t-1", assignee="alice", minutes=1),
        make_task("t-2", assignee="bob", minutes=2),
        make_task("t-3", incident_id="inc-2", assignee="alice", minutes=3,
                  state=TaskState.approved)]))
    # Alice, on a plane, delegates t-1 to Erin.
    delegated = make_task("t-1", assignee="alice", minutes=1, state=TaskState.delegated, rev=2,
                          delegated_to="erin")
    deputy = make_task("t-4", assignee="erin", minutes=5, replaces="t-1", via="delegation",
                       delegated_from="alice")
    await writer.apply(ProjectionBatch(incident=incident.model_copy(update={"rev": 2}),
                                       tasks=[delegated, deputy]))

    async def ids(**filters: Any) -> list[str]:
        return [task.id for task in (await reader.list_tasks(**filters))[0]]

    assert await ids(assignee="alice") == ["t-3", "t-1"]  # newest first, history kept
    assert await ids(assignee="alice", state=TaskState.open) == []
    assert await ids(assignee="alice", state=TaskState.delegated) == ["t-1"]
    assert await ids(assignee="erin", state=TaskState.open) == ["t-4"]
    assert await ids(state=TaskState.open) == ["t-4", "t-2"]
    assert await ids(incident_id="inc-1") == ["t-4", "t-2", "t-1"]
    assert await ids(incident_id="inc-1", assignee="bob") == ["t-2"]
    assert await ids() == ["t-4", "t-3", "t-2", "t-1"]


async def test_task_pages_cover_the_inbox(writer: ProjectionWriter, reader: ReadModel) -> None:
    tasks = [make_task(f"t-{n:02d}", minutes=n) for n in range(11)]
    await writer.apply(ProjectionBatch(incident=make_incident(), tasks=tasks))
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = await reader.list_tasks(assignee="alice", limit=4, cursor=cursor)
        seen += [task.id for task in page]
        if cursor is None:
            break
    assert seen == [task.id for task in reversed(tasks)]


async def test_clear_removes_read_models_but_keeps_other_keys(
        writer: ProjectionWriter, reader: ReadModel, redis_client: aioredis.Redis) -> None:
    batch = ProjectionBatch(incident=make_incident(), tasks=[make_task("t-1")],
                            nodes=[make_node()], timeline=[entry(1)])
    await writer.apply(batch)
    kept = {"ce:idem:action:inc-1:publish": "{}", "ce:auth:tokens": "x",
            "ce:dedup:post-123": "inc-1", "ce:notifications:alice": None}
    for key, value in kept.items():
        if value is None:
            await redis_client.lpush(key, "hello")
        else:
            await redis_client.set(key, value)

    deleted = await writer.clear()

    assert deleted > 0
    assert await reader.incident_view("inc-1") is None
    assert await reader.timeline("inc-1") == []
    assert await reader.list_incidents() == ([], None)
    assert await reader.list_tasks(assignee="alice") == ([], None)
    left = [key for key in await redis_client.keys("*")
            if not key.startswith("ce:stream:events")]  # the live-event replay buffers stay
    assert sorted(left) == sorted(kept)
    assert await writer.clear() == 0

    await writer.apply(batch)  # rebuilding from the source of truth works as before
    assert (await reader.incident_view("inc-1")) is not None
    assert len(await reader.timeline("inc-1")) == 1


# ---- read-your-writes: the API waits for a command's mark (`ReadModel.wait_answered`) ----


async def test_a_command_is_marked_answered_with_the_batch_that_carries_it(
        writer: ProjectionWriter, reader: ReadModel, redis_client: aioredis.Redis) -> None:
    assert not await reader.wait_answered("inc-1", "req-1", within=0.05)  # not yet projected
    decided = make_task("t-1", state=TaskState.approved, rev=2, decided_by="alice")
    waiter = asyncio.create_task(reader.wait_answered("inc-1", "req-1", within=30))
    await asyncio.sleep(0.02)
    assert not waiter.done()  # waits while the batch is not written
    await writer.apply(ProjectionBatch(incident=make_incident(rev=2), tasks=[decided],
                                       answered=["req-1"]))
    assert await asyncio.wait_for(waiter, timeout=10)
    assert await reader.task("t-1") == decided  # the mark never comes without the change
    assert 0 < await redis_client.ttl("ce:answered:inc-1:req-1") <= 600
    assert not await reader.wait_answered("inc-1", "req-2", within=0.01)
    await writer.clear()  # a rebuild of the read model keeps the marks (they expire)
    assert await reader.wait_answered("inc-1", "req-1", within=0)


async def test_a_listening_waiter_is_woken_by_the_batch_not_by_polling(
        writer: ProjectionWriter, redis_client: aioredis.Redis) -> None:
    """With the process's live-event hub, the API's wait for a command ends on the batch's
    event: the mark is read once when the wait starts and once when the event arrives,
    not every few milliseconds (what polling cost the API's CPU under load)."""
    hub = EventHub(redis_client)
    await hub.start()
    try:
        reader = ReadModel(redis_client, hub)
        await redis_client.config_resetstat()
        waiter = asyncio.create_task(reader.wait_answered("inc-1", "req-1", within=30))
        await asyncio.sleep(0.15)  # polling from 1 ms would have read the mark ~12 times
        assert not waiter.done()
        decided = make_task("t-1", state=TaskState.approved, rev=2, decided_by="alice")
        await writer.apply(ProjectionBatch(incident=make_incident(rev=2), tasks=[decided],
                                           answered=["req-1"]))
        assert await asyncio.wait_for(waiter, timeout=10)
        assert await reader.task("t-1") == decided
        stats = await redis_client.info("commandstats")
        assert stats["cmdstat_exists"]["calls"] <= 2
        # a batch for another command, or another incident, does not end the wait
        other = asyncio.create_task(reader.wait_answered("inc-1", "req-2", within=0.4))
        await writer.apply(ProjectionBatch(incident=make_incident(rev=3), answered=["req-3"]))
        await writer.apply(ProjectionBatch(incident=make_incident("inc-2", rev=1),
                                           answered=["req-2"]))
        assert await asyncio.wait_for(other, timeout=10) is False
        assert hub.subscribers == 0  # waiters leave nothing behind
    finally:
        await hub.stop()


async def test_a_waiter_that_missed_the_event_still_sees_the_mark(
        writer: ProjectionWriter, redis_client: aioredis.Redis) -> None:
    """The mark is the truth: a hub that is not listening (Redis pub/sub reconnecting)
    lets the wait fall back to reading the mark, so no command waits out its 5 s."""
    deaf = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0",
                                   socket_connect_timeout=1)
    hub = EventHub(deaf)  # its subscription never connects: it hears no event
    try:
        reader = ReadModel(redis_client, hub)
        waiter = asyncio.create_task(reader.wait_answered("inc-1", "req-1", within=30))
        await asyncio.sleep(0.05)
        assert not hub.listening and not waiter.done()
        await writer.apply(ProjectionBatch(incident=make_incident(rev=2), answered=["req-1"]))
        assert await asyncio.wait_for(waiter, timeout=2)
    finally:
        await hub.stop()
        await deaf.aclose()


async def test_waiting_for_a_command_gives_up_at_once_when_redis_is_unreachable() -> None:
    down = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0",
                                   socket_connect_timeout=1)
    try:
        answered = await asyncio.wait_for(
            ReadModel(down).wait_answered("inc-1", "req-1", within=60), timeout=10)
    finally:
        await down.aclose()
    assert answered is False  # the command is committed in Temporal; the API answers anyway


async def test_a_batch_lands_after_redis_lost_its_script_cache(
        writer: ProjectionWriter, reader: ReadModel, redis_client: aioredis.Redis) -> None:
    """A restarted Redis has no scripts cached: the writer's transaction still applies
    whole (its scripts are sent as text, never by SHA alone), in one round trip."""
    await writer.apply(ProjectionBatch(incident=make_incident(rev=1), timeline=[entry(1)]))
    await redis_client.script_flush()
    await redis_client.config_resetstat()
    decided = make_task("t-1", state=TaskState.approved, rev=2, decided_by="alice")
    await writer.apply(ProjectionBatch(incident=make_incident(rev=2), tasks=[decided],
                                       nodes=[make_node()], timeline=[entry(2, "decision")],
                                       answered=["req-1"]))
    assert await reader.task("t-1") == decided
    assert [e.seq for e in await reader.timeline("inc-1")] == [1, 2]
    assert await reader.wait_answered("inc-1", "req-1", within=0)
    stats = await redis_client.info("commandstats")
    assert "cmdstat_script|exists" not in stats and "cmdstat_script" not in stats
