"""Lists read one index per combination of filters: every combination the API offers gives
what a brute-force filter over the same documents gives, indexes never keep an entry for a
status or state a document no longer has, a rebuild or reindex restores them, and a long
timeline pages out every entry exactly once."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from domain.effects import ProjectionBatch
from domain.incident import Incident, IncidentStatus, Task, TaskState
from domain.playbook import Severity
from readmodel import keys
from readmodel.reader import ReadModel, timeline_cursor
from readmodel.rebuild import reindex
from readmodel.writer import ProjectionWriter, incident_index_keys, task_index_keys
from tests.test_readmodel import T0, entry, make_incident, make_task

PLAYBOOKS = ("viral-complaint", "data-breach-rumour", "product-safety")
PEOPLE = ("alice", "bob", "carol", "dan")
INCIDENT_IDS = [f"inc-{n:04d}" for n in range(160)]


def _seeded_world(seed: int) -> tuple[list[list[Incident]], list[list[Task]]]:
    """Each incident and task as the revisions a workflow would write: status, severity and
    task state change along the way; opened/created times often tie (same minute)."""
    rng = random.Random(seed)
    incidents: list[list[Incident]] = []
    tasks: list[list[Task]] = []
    for incident_id in INCIDENT_IDS:
        minutes = rng.randrange(0, 90)  # ~2 incidents per minute: plenty of ties
        playbook = rng.choice(PLAYBOOKS)
        revisions = []
        severity = rng.choice(list(Severity))
        for rev in range(1, rng.randrange(2, 5)):
            if rng.random() < 0.4:
                severity = rng.choice(list(Severity))
            status = IncidentStatus.resolved if rev > 1 and rng.random() < 0.5 \
                else IncidentStatus.open
            revisions.append(make_incident(incident_id, rev=rev, minutes=minutes,
                                           severity=severity, playbook=playbook, status=status))
        incidents.append(revisions)
        for n in range(rng.randrange(0, 6)):
            task_id = f"{incident_id}.holding.{n}"
            created = minutes + rng.choice((0, 0, 1, 2))
            assignee = rng.choice(PEOPLE)
            states = [TaskState.open, *rng.sample(list(TaskState)[1:], rng.randrange(0, 2))]
            tasks.append([make_task(task_id, incident_id=incident_id, assignee=assignee,
                                    minutes=created, state=state, rev=rev)
                          for rev, state in enumerate(states, 1)])
    return incidents, tasks


async def _write(writer: ProjectionWriter, incidents: list[list[Incident]],
                 tasks: list[list[Task]], rng: random.Random) -> None:
    """Every revision, in a shuffled order (a late older revision must change nothing)."""
    by_incident: dict[str, list[Task]] = {}
    for revisions in tasks:
        for task in revisions:
            by_incident.setdefault(task.incident_id, []).append(task)
    batches = []
    for revisions in incidents:
        for incident in revisions:
            mine = [t for t in by_incident.get(incident.id, [])
                    if t.rev <= incident.rev or incident is revisions[-1]]
            batches.append(ProjectionBatch(incident=incident, tasks=rng.sample(mine, len(mine))))
    rng.shuffle(batches)
    for batch in batches:
        await writer.apply(batch)


def _newest_first(items: list[Any], moment: str) -> list[str]:
    return [i.id for i in sorted(items, key=lambda i: (keys.epoch(getattr(i, moment)), i.id),
                                 reverse=True)]


async def _all_pages(fetch: Any, limit: int) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = await fetch(cursor=cursor, limit=limit)
        seen += [item.id for item in page]
        if cursor is None:
            return seen
        assert len(page) == limit


@pytest.fixture
async def world(redis_client: aioredis.Redis) -> tuple[list[Incident], list[Task]]:
    await redis_client.flushdb()
    incidents, tasks = _seeded_world(seed=10)
    await _write(ProjectionWriter(redis_client), incidents, tasks, random.Random(10))
    return [r[-1] for r in incidents], [r[-1] for r in tasks]


async def test_every_incident_filter_combination_matches_a_brute_force_filter(
        redis_client: aioredis.Redis, world: tuple[list[Incident], list[Task]]) -> None:
    incidents, _ = world
    reader = ReadModel(redis_client)
    ranges: list[tuple[datetime | None, datetime | None]] = [
        (None, None), (T0 + timedelta(minutes=20), T0 + timedelta(minutes=50)),
        (T0 + timedelta(minutes=500), None),  # matches nothing
        (None, T0 + timedelta(minutes=30))]
    combinations = itertools.product([None, *IncidentStatus], [None, *Severity],
                                     [None, *PLAYBOOKS, "no-such-playbook"], ranges)
    checked = 0
    for status, severity, playbook, (after, before) in combinations:
        expected = _newest_first([
            i for i in incidents
            if (status is None or i.status == status)
            and (severity is None or i.severity == severity)
            and (playbook is None or i.playbook.id == playbook)
            and (after is None or i.opened_at >= after)
            and (before is None or i.opened_at < before)], "opened_at")

        async def fetch(cursor: str | None, limit: int, status: Any = status,
                        severity: Any = severity, playbook: Any = playbook,
                        after: Any = after, before: Any = before) -> Any:
            return await reader.list_incidents(
                status=status, severity=severity, playbook=playbook, opened_after=after,
                opened_before=before, cursor=cursor, limit=limit)

        got = await _all_pages(fetch, limit=9)
        assert got == expected, (status, severity, playbook, after, before)
        checked += bool(expected)
    assert checked > 100  # most combinations match something: the check is not vacuous


async def test_every_task_filter_combination_matches_a_brute_force_filter(
        redis_client: aioredis.Redis, world: tuple[list[Incident], list[Task]]) -> None:
    _, tasks = world
    reader = ReadModel(redis_client)
    with_tasks = sorted({t.incident_id for t in tasks})
    combinations = itertools.product([None, *TaskState], [None, *PEOPLE, "nobody"],
                                     [None, *with_tasks[:3], "inc-9999"])
    checked = 0
    for state, assignee, incident_id in combinations:
        expected = _newest_first([
            t for t in tasks
            if (state is None or t.state == state)
            and (assignee is None or t.assignee == assignee)
            and (incident_id is None or t.incident_id == incident_id)], "created_at")

        async def fetch(cursor: str | None, limit: int, state: Any = state,
                        assignee: Any = assignee, incident_id: Any = incident_id) -> Any:
            return await reader.list_tasks(state=state, assignee=assignee,
                                           incident_id=incident_id, cursor=cursor, limit=limit)

        got = await _all_pages(fetch, limit=7)
        assert got == expected, (state, assignee, incident_id)
        checked += bool(expected)
    assert checked > 50


async def _index_contents(redis: aioredis.Redis) -> dict[str, set[str]]:
    """Every index zset of the read model -> its members."""
    found: dict[str, set[str]] = {}
    for pattern in ("ce:incidents*", "ce:tasks*", "ce:inbox:*", "ce:incident:*:tasks*"):
        async for name in redis.scan_iter(match=pattern):
            members = set(await redis.zrange(name, 0, -1))
            if members:
                found[name] = members
    return found


def _expected_indexes(incidents: list[Incident], tasks: list[Task]) -> dict[str, set[str]]:
    expected: dict[str, set[str]] = {}
    for doc, holds in [*((i, incident_index_keys(i)[0]) for i in incidents),
                       *((t, task_index_keys(t)[0]) for t in tasks)]:
        for name in holds:
            expected.setdefault(name, set()).add(doc.id)
    return expected


async def test_indexes_hold_exactly_the_current_documents_after_state_changes(
        redis_client: aioredis.Redis, world: tuple[list[Incident], list[Task]]) -> None:
    incidents, tasks = world
    assert await _index_contents(redis_client) == _expected_indexes(incidents, tasks)
    # one more change: an incident resolved and re-graded, a task decided
    incident = incidents[0].model_copy(update={
        "rev": 10, "status": IncidentStatus.resolved, "severity": Severity.low})
    task = make_task("inc-0000.holding.9", incident_id=incident.id, assignee="bob", rev=1)
    writer = ProjectionWriter(redis_client)
    await writer.apply(ProjectionBatch(incident=incident, tasks=[task]))
    decided = task.model_copy(update={"rev": 2, "state": TaskState.rejected})
    await writer.apply(ProjectionBatch(incident=incident, tasks=[decided]))
    incidents[0] = incident
    tasks.append(decided)
    contents = await _index_contents(redis_client)
    assert contents == _expected_indexes(incidents, tasks)
    reader = ReadModel(redis_client)
    open_low, _ = await reader.list_incidents(status=IncidentStatus.open, severity=Severity.low,
                                              limit=500)
    assert incident.id not in [i.id for i in open_low]
    bob_open, _ = await reader.list_tasks(assignee="bob", state=TaskState.open, limit=500)
    assert decided.id not in [t.id for t in bob_open]
    bob_rejected, _ = await reader.list_tasks(assignee="bob", state=TaskState.rejected,
                                              limit=500)
    assert decided.id in [t.id for t in bob_rejected]


async def test_rebuild_and_reindex_restore_every_index(
        redis_client: aioredis.Redis, world: tuple[list[Incident], list[Task]]) -> None:
    incidents, tasks = world
    expected = _expected_indexes(incidents, tasks)
    # reindex: the documents are there, the indexes are gone (a read model from before them)
    for name in expected:
        await redis_client.delete(name)
    report = await reindex(redis_client)
    assert (report.incidents, report.tasks) == (len(incidents), len(tasks))
    assert await _index_contents(redis_client) == expected
    # rebuild: everything cleared, then one full batch per incident, as `rebuild` writes
    writer = ProjectionWriter(redis_client)
    await writer.clear()
    assert await _index_contents(redis_client) == {}
    for incident in incidents:
        await writer.apply(ProjectionBatch(
            incident=incident, tasks=[t for t in tasks if t.incident_id == incident.id]))
    assert await _index_contents(redis_client) == expected
    page, _ = await ReadModel(redis_client).list_incidents(
        status=IncidentStatus.resolved, severity=Severity.high, limit=500)
    assert [i.id for i in page] == _newest_first(
        [i for i in incidents if i.status == "resolved" and i.severity == "high"], "opened_at")


async def test_a_long_timeline_pages_out_every_entry_exactly_once(
        redis_client: aioredis.Redis) -> None:
    await redis_client.flushdb()
    writer = ProjectionWriter(redis_client)
    reader = ReadModel(redis_client)
    incident = make_incident("inc-long")
    for start in range(1, 5001, 500):
        await writer.apply(ProjectionBatch(
            incident=incident, timeline=[entry(seq, "report_added") for seq in
                                         range(start, start + 500)]))
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = await reader.timeline_page("inc-long", cursor=cursor, limit=333)
        seen += [e.seq for e in page]
        pages += 1
        if pages == 3:  # entries appended while a client pages are read too, once
            await writer.apply(ProjectionBatch(
                incident=incident, timeline=[entry(seq, "report_added")
                                             for seq in range(5001, 5011)]))
        if cursor is None:
            break
    assert seen == list(range(1, 5011))
    assert pages == -(-5010 // 333)
    last, after_last = await reader.timeline_page("inc-long", cursor=timeline_cursor(5010))
    assert (last, after_last) == ([], None)
    with pytest.raises(ValueError, match="invalid cursor"):
        await reader.timeline_page("inc-long", cursor="not-a-cursor")
