"""BRIEF scenario 9, "the approver who can't be reached", through the real workflow.

Every channel fails for a legal approver (her webhook answers 410 Gone): the timeline keeps
the per-channel receipts, and the legal on-call stand-in gets a task at once instead of
waiting for the 15-minute tier. Messages link to the web pages, not to the JSON API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from domain.directory import Directory
from domain.incident import DirectorySnapshot
from domain.loader import sha256
from tests.clock import EVEN_WEEK
from tests.factories import directory, snapshot, viral_playbook
from tests.receivers import HttpReceiver, ReceivedRequest
from tests.workflow_harness import Harness, eventually, fresh_time_env, harness


@pytest.fixture
def sinks() -> Iterator[tuple[HttpReceiver, HttpReceiver]]:
    """A receiver that accepts and one that answers 410 Gone; they outlive the worker, so no
    delivery still in flight at teardown meets a closed port."""
    with HttpReceiver() as ok, HttpReceiver() as gone:
        gone.answer(410)
        yield ok, gone


@pytest.fixture
async def h(redis_url: str, sinks: tuple[HttpReceiver, HttpReceiver]
            ) -> AsyncIterator[Harness]:
    async with fresh_time_env() as env, harness(env, redis_url, EVEN_WEEK) as h:
        yield h


def reachable_directory(ok: HttpReceiver, gone: HttpReceiver) -> Directory:
    data = directory().model_dump(mode="json")
    for person in data["people"]:
        person["webhook"] = (gone if person["id"] == "lena-legal" else ok).url("/hook")
        person["email"] = None  # webhook is the only outward channel in this story
        if person["id"] == "olga-oncall":
            person["roles"] = []  # on call only, as in the demo: she stands in, never votes twice
    return Directory.model_validate(data)


async def test_an_unreachable_approver_is_replaced_by_on_call_at_once(
        h: Harness, sinks: tuple[HttpReceiver, HttpReceiver]) -> None:
    ok, gone = sinks
    people = reachable_directory(ok, gone)
    data = viral_playbook(h.publish.url())
    data["defaults"] = {"channels": ["log", "webhook"]}
    await h.advance_to("mon", 15, 0, "Europe/London")
    started = await h.now()
    handle = await h.start(
        snapshot(data, people),
        directory=DirectorySnapshot(sha256=sha256(people.model_dump_json().encode()),
                                    definition=people))

    def stand_in(tl: list[Any]) -> list[Any]:
        return [e for e in tl if e.kind == "task_created"
                and e.details.get("replaces") == "lena-legal"]
    timeline = await eventually(lambda: h.timeline(handle), lambda tl: bool(stand_in(tl)))
    created = stand_in(timeline)[0]
    assert created.details["assignee"] == "olga-oncall"
    assert "unreachable" in created.details["reason"]
    assert created.at - started < timedelta(minutes=15)  # not the next tier: at once
    failed = next(e for e in timeline if e.kind == "notification_failed"
                  and e.details["to"] == "lena-legal")
    receipts = {r["channel"]: r for r in failed.details["receipts"]}
    assert receipts["webhook"]["status"] == "failed" and receipts["webhook"]["permanent"]
    # lena keeps her own task: if she answers after all, her vote counts
    view = await h.state(handle)
    lena = next(t for t in view.tasks if t.assignee == "lena-legal")
    assert lena.state == "open" and lena.deliveries
    assert any(d["status"] == "failed" for d in lena.deliveries)
    # the stand-in is told, and every message links to the web pages
    told = await eventually(received(ok), lambda rs: any(
        "olga-oncall" in r.body.decode() or "/ui/tasks/" in r.body.decode() for r in rs))
    bodies = [r.body.decode() for r in told]
    assert any("/ui/incidents/" in b for b in bodies)
    # task messages carry signed one-click links (approve, reject) to confirmation pages
    assert any("/ui/act/" in b for b in bodies)
    assert not any("/incidents/inc-" in b.replace("/ui/incidents/", "") for b in bodies)


def received(receiver: HttpReceiver) -> Callable[[], Awaitable[list[ReceivedRequest]]]:
    async def probe() -> list[ReceivedRequest]:
        return receiver.requests
    return probe
