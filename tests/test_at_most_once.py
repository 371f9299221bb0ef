"""At-most-once actions on the time-skipping server, with a real loopback receiver.

For a receiver that can't deduplicate, an action marked `at_most_once` is recorded
"sending" before each call and never sent twice: a call that may have reached the receiver
(here a 500, which doesn't say whether it was done) makes the outcome unknown, the opener
is asked, and the step waits for a communicator's answer. A failure that proves nothing was
processed (503) is sent again after a durable backoff. (The worker killed mid-call is in
tests/test_exactly_once_publish.py, against a dev server and a worker process.)
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from domain.incident import ResolveUnknownActionRequest, TimelineEntry
from readmodel import keys
from tests.factories import snapshot
from tests.workflow_harness import Harness, eventually
from workflows.incident import IncidentWorkflow


def playbook(url: str) -> dict[str, Any]:
    return {
        "id": "post-once", "name": "Post once", "version": 1,
        "defaults": {"channels": ["log"], "respect_working_hours": False},
        "steps": [
            {"id": "post", "action": {"url": url, "at_most_once": True,
                                      "payload": {"text": "We are looking into it."}}},
            {"id": "after", "notify": {"to": [{"person": "sam-social"}],
                                       "message": "Posted: {{steps.post.outcome}}"}},
            {"id": "done", "resolution": {}},
        ],
    }


def kinds(timeline: list[TimelineEntry]) -> list[str]:
    return [e.kind for e in timeline if e.kind.startswith("action")]


async def answer(h: Harness, handle: WorkflowHandle[Any, Any], outcome: str,
                 actor: str = "sam-social") -> TimelineEntry:
    req = ResolveUnknownActionRequest(request_id=uuid.uuid4().hex, actor=actor, step_id="post",
                                      outcome=outcome, comment="checked the receiver")  # type: ignore[arg-type]
    entry: TimelineEntry = await handle.execute_update(IncidentWorkflow.resolve_unknown_action,
                                                       req)
    return entry


async def of_step(h: Harness, handle: WorkflowHandle[Any, Any], kind: str,
                  step: str) -> list[TimelineEntry]:
    return [e for e in await h.timeline(handle)
            if e.kind == kind and e.details.get("step") == step]


def refusal(exc: WorkflowUpdateFailedError) -> str | None:
    return exc.cause.type if isinstance(exc.cause, ApplicationError) else None


async def unknown_after_a_500(h: Harness) -> WorkflowHandle[Any, Any]:
    h.publish.answer(500)
    handle = await h.start(snapshot(playbook(h.publish.url("/post"))))
    await h.entries(handle, "action_outcome_unknown")
    await asyncio.sleep(0.2)
    await h.advance(timedelta(minutes=10))  # no retry comes, however long we wait
    assert h.publish.count == 1
    assert kinds(await h.timeline(handle)) == ["action_sending", "action_outcome_unknown"]
    return handle


async def test_a_500_is_never_resent_and_the_opener_is_asked(h: Harness) -> None:
    handle = await unknown_after_a_500(h)
    unknown = (await h.entries(handle, "action_outcome_unknown"))[0]
    assert "HTTP 500" in unknown.details["error"]
    sending = (await h.entries(handle, "action_sending"))[0]
    assert sending.seq < unknown.seq and sending.details["attempt"] == 1
    assert h.publish.requests[0].headers["idempotency-key"] == f"{handle.id}:post"
    feed = [json.loads(raw) for raw in await h.redis.lrange(keys.notifications("sam-social"),
                                                            0, -1)]
    asks = [f for f in feed if f["incident_id"] == handle.id and "is unknown" in f["message"]]
    assert len(asks) == 1
    view = await h.state(handle)
    assert view.incident.status == "open"
    assert not await of_step(h, handle, "notified", "after")  # the playbook waits


async def test_it_was_sent_ends_the_step_without_sending_again(h: Harness) -> None:
    handle = await unknown_after_a_500(h)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await answer(h, handle, "sent", actor="lena-legal")  # an approver may not
    assert refusal(refused.value) == "Forbidden"
    entry = await answer(h, handle, "sent")
    assert (entry.kind, entry.actor, entry.details["resolution"]) == (
        "action_outcome_resolved", "sam-social", "sent")
    after = await eventually(lambda: of_step(h, handle, "notified", "after"), bool)
    assert len(after) == 1
    assert h.publish.count == 1
    with pytest.raises(WorkflowUpdateFailedError) as again:
        await answer(h, handle, "resend")
    assert refusal(again.value) == "NothingToResolve"


async def test_send_it_again_sends_once_more_recorded_sending_first(h: Harness) -> None:
    handle = await unknown_after_a_500(h)
    h.publish.answer(200)
    await answer(h, handle, "resend")
    run = await h.entries(handle, "action_run")
    assert run[0].details["status_code"] == 200
    assert h.publish.count == 2
    assert kinds(await h.timeline(handle)) == [
        "action_sending", "action_outcome_unknown", "action_outcome_resolved",
        "action_sending", "action_run"]


async def test_a_503_proves_nothing_was_done_and_is_sent_again_after_a_backoff(
        h: Harness) -> None:
    h.publish.answer(503, 200)
    handle = await h.start(snapshot(playbook(h.publish.url("/post"))))
    await eventually(lambda: h.received(), lambda r: len(r) >= 1)
    started: datetime = await h.now()
    await h.advance(timedelta(seconds=5))  # the durable backoff before the second send
    run = await h.entries(handle, "action_run")
    assert run[0].details["status_code"] == 200
    assert h.publish.count == 2
    sends = await h.entries(handle, "action_sending")
    assert [s.details["attempt"] for s in sends] == [1, 2]
    assert (sends[1].at - started).total_seconds() >= 1.5
    assert "action_outcome_unknown" not in kinds(await h.timeline(handle))
