"""BRIEF scenario 7, "veto, then redraft", in virtual time with the real activities.

A communicator drafts the holding statement (v1); legal vetoes it with a reason; the
communicator submits v2; the same node runs a new round in which approvals of v1 don't
count; quorum approves v2 and exactly v2's text is published, once, with its sha256.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from domain.incident import (
    ConfirmPublishRequest,
    DecideRequest,
    Report,
    SubmitDraftRequest,
    SubmitDraftResult,
    Task,
)
from readmodel import keys
from tests.factories import drafts_playbook, sha, snapshot, viral_playbook
from tests.workflow_harness import Harness, eventually
from workflows.incident import IncidentWorkflow

V1 = "We are looking into the posts about cold pizza."
V2 = "We're sorry about the cold pizza. We're contacting the customer and will update by 20:00."


def code_of(exc: WorkflowUpdateFailedError) -> str | None:
    return exc.cause.type if isinstance(exc.cause, ApplicationError) else None


async def draft(handle: Any, text: str, actor: str = "sam-social") -> SubmitDraftResult:
    result: SubmitDraftResult = await handle.execute_update(
        IncidentWorkflow.submit_draft, SubmitDraftRequest(
            request_id=uuid.uuid4().hex, actor=actor, node_id="holding-statement", text=text))
    return result


async def decide(handle: Any, task: Task, decision: str, comment: str = "",
                 draft_sha256: str | None = None) -> Any:
    return await handle.execute_update(IncidentWorkflow.decide, DecideRequest(
        request_id=uuid.uuid4().hex, actor=task.assignee, task_id=task.id,
        decision=decision, comment=comment, draft_sha256=draft_sha256))  # type: ignore[arg-type]


async def round_tasks(h: Harness, handle: Any, version: int) -> list[Task]:
    view = await eventually(lambda: h.state(handle), lambda v: any(
        t.draft_version == version and t.state == "open" for t in v.tasks))
    return [t for t in view.tasks if t.draft_version == version and t.state == "open"]


async def test_veto_then_redraft_publishes_exactly_v2_once(h: Harness) -> None:
    await h.advance_to("mon", 15, 0, "Europe/London")
    handle = await h.start(snapshot(drafts_playbook(h.publish.url("/publish"))))
    waiting = await h.entries(handle, "awaiting_draft")
    assert waiting[0].details["node"] == "holding-statement"
    assert not (await h.state(handle)).tasks  # nobody approves before there is a text

    first = await draft(handle, V1)
    assert (first.draft.version, first.draft.sha256, first.draft.author) == (
        1, sha(V1), "sam-social")
    v1_tasks = await round_tasks(h, handle, 1)
    assert {t.draft_sha256 for t in v1_tasks} == {sha(V1)}
    assert all(t.content == V1 for t in v1_tasks)
    comms = [t for t in v1_tasks if t.role == "comms-lead"]
    legal = next(t for t in v1_tasks if t.role == "legal")

    await decide(handle, comms[0], "approve")  # an approval of v1...
    with pytest.raises(WorkflowUpdateFailedError) as refused:  # a veto needs a reason
        await decide(handle, legal, "reject")
    assert code_of(refused.value) == "ReasonRequired"
    vetoed = await decide(handle, legal, "reject", comment="Admits liability")
    assert vetoed.node.outcome == "pending" and vetoed.node.awaiting_draft
    outcome = (await h.entries(handle, "round_outcome"))[0].details
    assert (outcome["round"], outcome["version"], outcome["outcome"]) == (1, 1, "vetoed")
    # the author is asked for the next version at once, not when the deadline runs out
    asked = await eventually(lambda: h.timeline(handle), lambda tl: any(
        e.kind == "notified" and e.details["purpose"] == "notify"
        and e.details["step"] == "holding-statement" for e in tl))
    assert {e.details["to"] for e in asked if e.kind == "notified"
            and e.details["purpose"] == "notify"} == {"sam-social"}

    second = await draft(handle, V2, actor="nia-desk")
    assert second.draft.version == 2 and second.node is not None and second.node.round == 2
    v2_tasks = await round_tasks(h, handle, 2)
    # the same approvers, a fresh task each, bound to v2
    assert {t.assignee for t in v2_tasks} == {t.assignee for t in v1_tasks}
    assert {t.draft_sha256 for t in v2_tasks} == {sha(V2)} and all(t.round == 2 for t in v2_tasks)

    # ...never counts for v2: a decision on the old text is refused
    legal2 = next(t for t in v2_tasks if t.role == "legal")
    with pytest.raises(WorkflowUpdateFailedError) as stale:
        await decide(handle, legal2, "approve", draft_sha256=sha(V1))
    assert code_of(stale.value) == "DraftChanged"
    result = None
    for task in [legal2, *[t for t in v2_tasks if t.role == "comms-lead"][:1]]:
        result = await decide(handle, task, "approve", draft_sha256=sha(V2))
    assert result is not None and result.node.outcome == "pending"  # 1 comms approval of v2
    last = [t for t in v2_tasks if t.role == "comms-lead"][1]
    result = await decide(handle, last, "approve", draft_sha256=sha(V2))
    assert result.node.outcome == "approved" and result.node.approved_sha256 == sha(V2)

    run = (await h.entries(handle, "action_run"))[0].details
    assert (run["published_sha256"], run["published_version"]) == (sha(V2), 2)
    await eventually(h.received, lambda r: len(r) >= 1)
    assert len(h.publish.requests) == 1
    published = h.publish.requests[0]
    assert published.json()["text"] == V2
    assert published.headers["x-crisis-content-sha256"] == sha(V2)
    drafts = await handle.query(IncidentWorkflow.drafts)
    assert [d["version"] for d in drafts["holding-statement"]] == [1, 2]


async def test_a_draft_submitted_before_the_node_opens_starts_round_one(h: Harness) -> None:
    await h.advance_to("mon", 15, 0, "Europe/London")
    data = drafts_playbook(h.publish.url("/publish"))
    data["steps"].insert(2, {"id": "pause", "wait": {"duration": "10m"}})
    handle = await h.start(snapshot(data))
    early = await draft(handle, V1)
    assert early.node is None and early.tasks == []
    await h.advance(timedelta(minutes=11))
    tasks = await round_tasks(h, handle, 1)
    assert tasks and all(t.content == V1 for t in tasks)
    # and the approvers' messages quote that draft, not the playbook's suggested text
    legal = next(t for t in tasks if t.role == "legal")
    told = await eventually(lambda: feed(h, legal.assignee), lambda ms: any(
        "approval is needed" in m for m in ms))
    assert all(V1 in m and "Suggested" not in m for m in told if "approval is needed" in m)


async def test_two_person_publish_refuses_the_author_and_accepts_someone_else(
        h: Harness) -> None:
    await h.advance_to("mon", 15, 0, "Europe/London")
    handle = await h.start(snapshot(drafts_playbook(h.publish.url("/publish"),
                                                    confirm="two_person")))
    await draft(handle, V2)  # by sam-social
    tasks = await round_tasks(h, handle, 1)
    legal = next(t for t in tasks if t.role == "legal")
    for task in [legal, *[t for t in tasks if t.role == "comms-lead"][:2]]:
        await decide(handle, task, "approve")
    await h.entries(handle, "awaiting_publish_confirmation")
    assert h.publish.requests == []  # nothing goes out before the second person confirms

    def confirm(actor: str) -> ConfirmPublishRequest:
        return ConfirmPublishRequest(request_id=uuid.uuid4().hex, actor=actor,
                                     step_id="publish-statement")
    with pytest.raises(WorkflowUpdateFailedError) as author:
        await handle.execute_update(IncidentWorkflow.confirm_publish, confirm("sam-social"))
    assert code_of(author.value) == "Forbidden"
    with pytest.raises(WorkflowUpdateFailedError) as approver:  # not a communicator
        await handle.execute_update(IncidentWorkflow.confirm_publish, confirm(legal.assignee))
    assert code_of(approver.value) == "Forbidden"
    entry = await handle.execute_update(IncidentWorkflow.confirm_publish, confirm("nia-desk"))
    assert entry.actor == "nia-desk" and entry.details["sha256"] == sha(V2)
    await h.entries(handle, "action_run")
    await eventually(h.received, lambda r: len(r) >= 1)
    assert [r.json()["text"] for r in h.publish.requests] == [V2]


async def test_drafts_are_refused_where_the_playbook_takes_none(h: Harness) -> None:
    await h.advance_to("mon", 15, 0, "Europe/London")
    handle = await h.start(snapshot(viral_playbook(h.publish.url())))
    await h.open_tasks(handle)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await draft(handle, V1)
    assert code_of(refused.value) == "DraftRefused"
    handle2 = await h.start(snapshot(drafts_playbook(h.publish.url())))
    await h.entries(handle2, "awaiting_draft")
    with pytest.raises(WorkflowUpdateFailedError) as approver:  # only communicators draft
        await draft(handle2, V1, actor="lena-legal")
    assert code_of(approver.value) == "Forbidden"


async def test_restarted_clock_escalates_each_round_afresh(h: Harness) -> None:
    await h.advance_to("mon", 15, 0, "Europe/London")
    handle = await h.start(snapshot(drafts_playbook(h.publish.url(),
                                                    escalation_clock="restart")))
    await draft(handle, V1)
    tasks = await round_tasks(h, handle, 1)
    await h.advance(timedelta(minutes=10))
    legal = next(t for t in tasks if t.role == "legal")
    await decide(handle, legal, "reject", comment="No")
    second = await draft(handle, V2)
    assert second.node is not None and second.node.round_started_at is not None
    started: datetime = second.node.round_started_at
    await h.advance(timedelta(minutes=10))  # 20 min after opening, 10 after round 2
    timeline = await h.timeline(handle)
    assert not [e for e in timeline if e.kind == "escalation"]
    await h.advance(timedelta(minutes=6))
    escalations = await h.entries(handle, "escalation")
    assert escalations[0].at - started >= timedelta(minutes=15)


async def test_a_publish_waiting_for_confirmation_survives_continue_as_new(h: Harness) -> None:
    """A storm of reports makes the run continue as new while the approved statement waits
    for its second person: the new run still waits, and the confirmation publishes it."""
    await h.advance_to("mon", 15, 0, "Europe/London")
    handle = await h.start(snapshot(drafts_playbook(h.publish.url("/publish"),
                                                    confirm="two_person")),
                           continue_as_new_after_events=80)
    await draft(handle, V2)
    tasks = await round_tasks(h, handle, 1)
    legal = next(t for t in tasks if t.role == "legal")
    for task in [legal, *[t for t in tasks if t.role == "comms-lead"][:2]]:
        await decide(handle, task, "approve")
    await h.entries(handle, "awaiting_publish_confirmation")
    first_run = (await handle.describe()).run_id
    for n in range(40):
        await h.update(handle, IncidentWorkflow.report, Report(
            id=f"r{n}", summary="more", reported_by="ray-reporter"))
        if (await handle.describe()).run_id != first_run:
            break
    await eventually(handle.describe, lambda d: d.run_id != first_run)
    entry = await h.update(handle, IncidentWorkflow.confirm_publish, ConfirmPublishRequest(
        request_id=uuid.uuid4().hex, actor="nia-desk", step_id="publish-statement"))
    assert entry.details["sha256"] == sha(V2)
    await h.entries(handle, "action_run")
    await eventually(h.received, lambda r: len(r) >= 1)
    assert [r.json()["text"] for r in h.publish.requests] == [V2]



async def test_draft_and_reason_reach_people_word_for_word(h: Harness) -> None:
    """Placeholders typed by people are their words, never a template: a draft or a reject
    reason saying `{{incident.dedup_key}}` reaches the feed as typed, not filled in."""
    typed = "Tell them {{incident.dedup_key}} and {{steps.holding-statement.content}}."
    reason = "Quote {{incident.source_url}} instead"
    await h.advance_to("mon", 15, 0, "Europe/London")
    handle = await h.start(snapshot(drafts_playbook(h.publish.url("/publish"))),
                           dedup_key="post-123")
    await h.entries(handle, "awaiting_draft")
    await draft(handle, typed)
    legal = next(t for t in await round_tasks(h, handle, 1) if t.role == "legal")
    await decide(handle, legal, "reject", comment=reason)

    asked = await eventually(lambda: feed(h, "sam-social"),
                             lambda ms: any("was not approved" in m for m in ms))
    redraft = next(m for m in asked if "was not approved" in m)
    task_message = await eventually(lambda: feed(h, legal.assignee), lambda ms: any(
        "approval is needed" in m for m in ms))
    task_message = next(m for m in task_message if "approval is needed" in m)
    assert typed in task_message and reason in redraft
    assert "post-123" not in task_message + redraft
    assert "social.example" not in redraft


async def feed(h: Harness, person: str) -> list[str]:
    """The messages in a person's notification feed (the `log` channel), newest first."""
    raw = await h.redis.lrange(keys.notifications(person), 0, -1)
    return [json.loads(item)["message"] for item in raw]
