"""Activities against real loopback receivers (HTTP, SMTP), real Redis and a real worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import IncidentActivities, SmtpSettings
from domain.effects import (
    ActionRequest,
    NotifyBatchRequest,
    NotifyRequest,
    ProjectionBatch,
    Recipient,
)
from domain.incident import Incident, PlaybookRef
from domain.playbook import Channel, Severity
from readmodel.reader import ReadModel
from tests.activity_probe_workflows import NotifyProbe, RunActionProbe
from tests.receivers import HttpReceiver, SmtpReceiver
from tests.servers import free_port
from worker.main import workflow_runner

SENDER = "crisis-engine@example.test"


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        yield client


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def acts(redis_client: aioredis.Redis, http_client: httpx.AsyncClient,
         smtp: SmtpReceiver) -> IncidentActivities:
    return IncidentActivities(redis_client, http_client,
                              SmtpSettings(host="127.0.0.1", port=smtp.port, sender=SENDER))


def notify_request(*, key: str = "inc-1:notify-social:alice", webhook: str | None = None,
                   email: str | None = "alice@example.test",
                   channels: tuple[Channel, ...] = ("log", "webhook", "email")) -> NotifyRequest:
    return NotifyRequest(
        idempotency_key=key, incident_id="inc-1", step_id="notify-social", kind="notify",
        recipient=Recipient(person_id="alice", name="Alice Martin", email=email,
                            webhook=webhook),
        channels=list(channels), subject="[HIGH] Viral complaint about ad",
        message="A post about our ad is spreading. Open the incident to respond.")


def action_request(url: str, *, key: str = "inc-1:publish") -> ActionRequest:
    return ActionRequest(idempotency_key=key, incident_id="inc-1", step_id="publish", url=url,
                         payload={"statement": "We hear you.", "incident": "inc-1"},
                         headers={"X-Source": "crisis-engine"})


async def feed(redis: aioredis.Redis, person: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in await redis.lrange(f"ce:notifications:{person}", 0, -1)]


# ---- notify ---------------------------------------------------------------------------


async def test_notify_delivers_every_channel_once(
        acts: IncidentActivities, hook: HttpReceiver, smtp: SmtpReceiver,
        redis_client: aioredis.Redis) -> None:
    req = notify_request(webhook=hook.url("/slack"))

    first = await acts.notify(req)

    assert first.delivered == ["log", "webhook", "email"]
    [posted] = hook.requests
    assert posted.path == "/slack"
    body = posted.json()
    assert body["text"].startswith("[HIGH] Viral complaint about ad\n")
    assert body["blocks"][0] == {"type": "header", "text": {
        "type": "plain_text", "text": "[HIGH] Viral complaint about ad"}}
    assert posted.headers["idempotency-key"] == req.idempotency_key
    [mail] = smtp.messages
    assert mail["Subject"] == "[HIGH] Viral complaint about ad"
    assert mail["To"] == "Alice Martin <alice@example.test>"
    assert mail["From"] == SENDER
    plain = mail.get_body(("plain",))
    assert plain is not None and "A post about our ad is spreading" in plain.get_content()
    [logged] = await feed(redis_client, "alice")
    assert logged["incident_id"] == "inc-1" and logged["subject"] == req.subject

    again = await acts.notify(req)

    assert again.delivered == [] and again.already_done == ["log", "webhook", "email"]
    assert hook.count == 1 and len(smtp.messages) == 1
    assert len(await feed(redis_client, "alice")) == 1


async def test_notify_skips_channels_without_an_address(
        acts: IncidentActivities, smtp: SmtpReceiver) -> None:
    result = await acts.notify(notify_request(webhook=None, email=None))

    assert result.delivered == ["log"]
    assert result.skipped == {"webhook": "recipient has no webhook",
                              "email": "recipient has no email address"}
    assert smtp.attempts == 0


async def test_notification_feed_keeps_the_latest_200(
        acts: IncidentActivities, redis_client: aioredis.Redis) -> None:
    for n in range(205):
        await acts.notify(notify_request(key=f"inc-1:step-{n}:alice", channels=("log",)))

    entries = await feed(redis_client, "alice")
    assert len(entries) == 200
    assert entries[0]["idempotency_key"] == "inc-1:step-204:alice"  # newest first


async def test_rejected_webhook_is_final_and_other_channels_still_deliver(
        acts: IncidentActivities, smtp: SmtpReceiver) -> None:
    with HttpReceiver(statuses=[400]) as hook:
        req = notify_request(webhook=hook.url())
        with pytest.raises(ApplicationError) as failure:
            await acts.notify(req)
        assert failure.value.type == "DeliveryRejected" and failure.value.non_retryable
        assert "HTTP 400" in failure.value.message
        assert len(smtp.messages) == 1

        # Should anything call again with the same key, nothing is re-sent.
        again = await acts.notify(req)
        assert again.already_done == ["log", "email"]
        assert again.skipped["webhook"].startswith("rejected on an earlier attempt")
        assert hook.count == 1 and len(smtp.messages) == 1


@pytest.mark.parametrize("status", [500, 503, 408, 429])
async def test_webhook_server_errors_are_retryable(acts: IncidentActivities, status: int) -> None:
    with HttpReceiver(statuses=[status]) as hook:
        with pytest.raises(ApplicationError) as failure:
            await acts.notify(notify_request(webhook=hook.url(), channels=("webhook",)))
    assert failure.value.type == "DeliveryFailed" and not failure.value.non_retryable


@pytest.mark.parametrize(("reply", "retryable"), [
    ("451 4.3.0 Mail server temporarily rejected message", True),
    ("550 5.1.1 No such user", False),
])
async def test_smtp_replies_decide_retry(acts: IncidentActivities, smtp: SmtpReceiver,
                                         reply: str, retryable: bool) -> None:
    smtp.reply_with(reply)
    with pytest.raises(ApplicationError) as failure:
        await acts.notify(notify_request(channels=("email",)))
    assert failure.value.non_retryable is not retryable
    assert failure.value.type == ("DeliveryFailed" if retryable else "DeliveryRejected")
    assert smtp.attempts == 1 and smtp.messages == []


async def test_unreachable_smtp_and_webhook_are_retryable(
        redis_client: aioredis.Redis, http_client: httpx.AsyncClient) -> None:
    dead = free_port()
    acts = IncidentActivities(redis_client, http_client,
                              SmtpSettings(host="127.0.0.1", port=dead, sender=SENDER))
    with pytest.raises(ApplicationError) as failure:
        await acts.notify(notify_request(webhook=f"http://127.0.0.1:{dead}/x"))
    assert failure.value.type == "DeliveryFailed" and not failure.value.non_retryable
    assert set(failure.value.details[0]["channels"]) == {"webhook", "email"}
    assert failure.value.details[0]["delivered"] == ["log"]


# ---- run_action -----------------------------------------------------------------------


async def test_action_sends_payload_once_with_idempotency_key(
        acts: IncidentActivities, hook: HttpReceiver) -> None:
    req = action_request(hook.url("/publish"))

    result = await acts.run_action(req)

    assert result.status_code == 200 and result.body_excerpt == '{"ok": true}'
    assert not result.already_done
    [sent] = hook.requests
    assert (sent.method, sent.path) == ("POST", "/publish")
    assert sent.json() == {"statement": "We hear you.", "incident": "inc-1"}
    assert sent.headers["idempotency-key"] == "inc-1:publish"
    assert sent.headers["x-source"] == "crisis-engine"

    repeat = await acts.run_action(req)

    assert repeat.already_done and repeat.status_code == 200
    assert hook.count == 1


async def test_action_400_is_not_retryable(acts: IncidentActivities) -> None:
    with HttpReceiver(statuses=[400], response_body='{"error": "bad statement"}') as hook:
        with pytest.raises(ApplicationError) as failure:
            await acts.run_action(action_request(hook.url()))
    assert failure.value.type == "DeliveryRejected" and failure.value.non_retryable
    assert failure.value.details[0]["body"] == '{"error": "bad statement"}'


async def test_action_429_waits_for_retry_after(acts: IncidentActivities) -> None:
    with HttpReceiver(statuses=[429], response_headers={"Retry-After": "7"}) as hook:
        with pytest.raises(ApplicationError) as failure:
            await acts.run_action(action_request(hook.url()))
    assert not failure.value.non_retryable
    assert failure.value.next_retry_delay == timedelta(seconds=7)


async def test_action_with_unsupported_url_is_rejected(acts: IncidentActivities) -> None:
    with pytest.raises(ApplicationError) as failure:
        await acts.run_action(action_request("ftp://127.0.0.1/publish"))
    assert failure.value.non_retryable


# ---- project --------------------------------------------------------------------------


async def test_project_writes_the_read_model(acts: IncidentActivities,
                                             redis_client: aioredis.Redis) -> None:
    incident = Incident(id="inc-9", title="Prank video", summary="Employees posted a video",
                        severity=Severity.critical, opened_by="carol",
                        opened_at=datetime(2025, 3, 1, 2, 0, tzinfo=UTC),
                        playbook=PlaybookRef(id="data-breach", version=3, sha256="ab" * 32),
                        rev=1)
    await acts.project(ProjectionBatch(incident=incident))
    assert await ReadModel(redis_client).incident("inc-9") == incident


# ---- retries through a real worker (time-skipping server) --------------------------------


async def run_probe(env: WorkflowEnvironment, acts: IncidentActivities, workflow: Any,
                    req: Any) -> Any:
    queue = f"probe-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=queue, workflows=[RunActionProbe, NotifyProbe],
                      activities=acts.activities, workflow_runner=workflow_runner()):
        return await env.client.execute_workflow(
            workflow.run, req, id=f"probe-{uuid.uuid4()}", task_queue=queue)


@pytest.mark.parametrize(("status", "calls", "error_type", "retry_state"), [
    (500, 3, "DeliveryFailed", RetryState.MAXIMUM_ATTEMPTS_REACHED),
    (400, 1, "DeliveryRejected", RetryState.NON_RETRYABLE_FAILURE),
])
async def test_worker_retries_stop_at_the_policy(
        time_env: WorkflowEnvironment, acts: IncidentActivities, status: int, calls: int,
        error_type: str, retry_state: RetryState) -> None:
    with HttpReceiver(statuses=[status]) as hook:
        with pytest.raises(WorkflowFailureError) as failure:
            await run_probe(time_env, acts, RunActionProbe, action_request(hook.url()))
        assert hook.count == calls
    activity_error = failure.value.cause
    assert isinstance(activity_error, ActivityError)
    assert activity_error.retry_state == retry_state
    assert isinstance(activity_error.cause, ApplicationError)
    assert activity_error.cause.type == error_type


async def test_worker_retry_delivers_only_the_missing_channel(
        time_env: WorkflowEnvironment, acts: IncidentActivities, smtp: SmtpReceiver,
        redis_client: aioredis.Redis) -> None:
    with HttpReceiver(statuses=[500, 200]) as hook:
        result = await run_probe(time_env, acts, NotifyProbe,
                                 notify_request(webhook=hook.url()))
        assert hook.count == 2
    assert result.delivered == ["webhook"]
    assert result.already_done == ["log", "email"]
    assert len(smtp.messages) == 1
    assert len(await feed(redis_client, "alice")) == 1


# ---- notify_batch: one activity per step, per-recipient keys ----------------------------


def _person_request(person: str, *, webhook: str, step: str = "notify-social") -> NotifyRequest:
    return NotifyRequest(
        idempotency_key=f"inc-1:{step}:{person}", incident_id="inc-1", step_id=step,
        kind="notify", recipient=Recipient(person_id=person, name=person.title(),
                                           webhook=webhook),
        channels=["log", "webhook"], subject="[HIGH] Viral complaint",
        message="A post is spreading.")


async def test_notify_batch_reports_each_recipient_and_a_retry_resends_only_what_failed(
        acts: IncidentActivities, redis_client: aioredis.Redis) -> None:
    """One step, three recipients in one activity: one receiver says 503 (for now), one
    refuses (404), one takes it. The batch never raises; each outcome says what happened.
    Sent again with the same keys (what the workflow's retry does), only the 503 one is
    tried again, and only on its failed channel."""
    with HttpReceiver() as ok, HttpReceiver(statuses=[503, 200]) as busy, \
            HttpReceiver(statuses=[404]) as refusing:
        batch = NotifyBatchRequest(requests=[
            _person_request("alice", webhook=ok.url()),
            _person_request("bob", webhook=busy.url()),
            _person_request("carol", webhook=refusing.url())])
        first = await acts.notify_batch(batch)
        alice, bob, carol = first.outcomes
        assert alice.result is not None and sorted(alice.result.delivered) == ["log", "webhook"]
        assert bob.result is None and bob.retryable and bob.error_type == "DeliveryFailed"
        assert bob.partial is not None and bob.partial.delivered == ["log"]
        assert carol.result is None and not carol.retryable
        assert carol.error_type == "DeliveryRejected"
        assert (ok.count, busy.count, refusing.count) == (1, 1, 1)

        again = await acts.notify_batch(batch)
        alice, bob, carol = again.outcomes
        assert alice.result is not None and sorted(alice.result.already_done) == [
            "log", "webhook"]
        assert bob.result is not None and bob.result.delivered == ["webhook"]
        assert bob.result.already_done == ["log"]
        assert carol.result is not None  # the refusal is remembered: never knocked on again
        assert carol.result.skipped["webhook"].startswith("rejected on an earlier attempt")
        assert (ok.count, busy.count, refusing.count) == (1, 2, 1)
    for person in ("alice", "bob", "carol"):
        assert len(await feed(redis_client, person)) == 1  # the log channel, once each
