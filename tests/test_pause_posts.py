"""Pause scheduled posts: a playbook action calls the organisation's scheduler when the
incident opens, and its `resume_on_resolve` call runs on resolution unless someone asked to
keep posts paused. Both calls are on the timeline with their status."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from domain.incident import KeepPostsPausedRequest, ResolveRequest
from tests.factories import snapshot
from tests.workflow_harness import Harness, eventually
from workflows.incident import IncidentWorkflow


def pausing_playbook(scheduler: str) -> dict[str, Any]:
    return {
        "id": "pause-posts", "name": "Pause scheduled posts", "version": 1,
        "steps": [
            {"id": "pause-posts", "action": {
                "url": f"{scheduler}/pause",
                "payload": {"incident": "{{incident.id}}", "reason": "{{incident.title}}"},
                "resume_on_resolve": {"url": f"{scheduler}/resume",
                                      "payload": {"incident": "{{incident.id}}"}}}},
            {"id": "resolved", "resolution": {}},
        ],
    }


async def resolve(handle: Any, actor: str = "nia-desk") -> None:
    await handle.execute_update(IncidentWorkflow.resolve, ResolveRequest(
        request_id=uuid.uuid4().hex, actor=actor, summary="Handled"))


async def keep(handle: Any, keep: bool = True, reason: str = "the ad is still offensive"
               ) -> Any:
    return await handle.execute_update(IncidentWorkflow.keep_posts_paused, KeepPostsPausedRequest(
        request_id=uuid.uuid4().hex, actor="nia-desk", keep=keep, reason=reason))


async def test_posts_pause_on_open_and_resume_on_resolution(h: Harness) -> None:
    handle = await h.start(snapshot(pausing_playbook(h.publish.url(""))))
    paused = await h.entries(handle, "posts_paused")
    assert paused[0].details["step"] == "pause-posts"
    run = (await h.entries(handle, "action_run"))[0].details
    assert (run["step"], run["status_code"]) == ("pause-posts", 200)
    assert [r.path for r in h.publish.requests] == ["/pause"]

    await resolve(handle)
    await handle.result()
    resumed = (await h.entries(handle, "posts_resumed"))[0].details
    assert (resumed["step"], resumed["status_code"]) == ("pause-posts", 200)
    assert [r.path for r in h.publish.requests] == ["/pause", "/resume"]
    pause, resume = h.publish.requests
    assert resume.json() == {"incident": handle.id}
    assert resume.headers["idempotency-key"] == f"{handle.id}:pause-posts:resume"
    assert pause.headers["idempotency-key"] == f"{handle.id}:pause-posts"


async def test_someone_can_keep_posts_paused_and_change_their_mind(h: Harness) -> None:
    handle = await h.start(snapshot(pausing_playbook(h.publish.url(""))))
    await h.entries(handle, "posts_paused")
    await keep(handle, True)
    await keep(handle, False, reason="apology is out")
    await keep(handle, True, reason="second wave of posts")
    await resolve(handle)
    await handle.result()
    skipped = (await h.entries(handle, "posts_resume_skipped"))[0].details
    assert (skipped["kept_by"], skipped["reason"]) == ("nia-desk", "second wave of posts")
    assert not any(e.kind == "posts_resumed" for e in await h.timeline(handle))
    assert [r.path for r in h.publish.requests] == ["/pause"]


async def test_a_failed_resume_is_recorded_with_its_status(h: Harness) -> None:
    h.publish.answer(200, 400)  # the scheduler refuses the resume
    handle = await h.start(snapshot(pausing_playbook(h.publish.url(""))))
    await h.entries(handle, "posts_paused")
    await resolve(handle)
    await handle.result()
    failed = (await h.entries(handle, "posts_resume_failed"))[0].details
    assert "400" in failed["error"]


async def test_keeping_posts_paused_needs_a_pausing_playbook(h: Harness) -> None:
    data = pausing_playbook(h.publish.url(""))
    data["steps"] = data["steps"][1:]
    handle = await h.start(snapshot(data))
    await eventually(lambda: h.state(handle), lambda v: v.incident.status == "open")
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await keep(handle)
    assert isinstance(refused.value.cause, ApplicationError)
    assert refused.value.cause.type == "NoPausedPosts"
