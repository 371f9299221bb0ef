"""Reaching people on every channel: Apprise services, SMTP with STARTTLS/TLS and login,
escaping of hostile text, delivery receipts, and infrastructure outages.

Every channel talks to a real loopback receiver (HTTP for webhooks and Apprise `json://` /
`form://`, aiosmtpd for mail) and the tests check what arrived there.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import markdown as markdown_lib
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.testing import WorkflowEnvironment

from activities import IncidentActivities, SmtpSettings
from activities.apprise_channel import AppriseChannel
from core.config import ROOT
from domain.directory import Person
from domain.effects import ActionRequest, MessageLink, NotifyRequest, NotifyResult, Recipient
from domain.loader import load_directory
from domain.playbook import Channel
from tests.activity_probe_workflows import NotifyProbe
from tests.receivers import HttpReceiver, SmtpReceiver
from tests.servers import free_port, redis_server
from tests.test_activities import feed, run_probe

SENDER = "crisis-engine@example.test"
PUBLIC = "https://crisis.example.test"
SECRET = "s3cr3t-token-9f8e"
HOSTILE = ('<!channel> <https://evil.example|click here> & [click here](https://evil.example) '
           '<script>alert("x")</script> **bold** @here')


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        yield client


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture
def push() -> Iterator[HttpReceiver]:
    """An Apprise `json://` receiver (a phone push gateway, say)."""
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def sms() -> Iterator[HttpReceiver]:
    """An Apprise `form://` receiver (an SMS gateway, say)."""
    with HttpReceiver() as receiver:
        yield receiver


def apprise_config(tmp_path: Path, push: HttpReceiver, sms: HttpReceiver,
                   push_query: str = "") -> Path:
    path = tmp_path / "apprise.yaml"
    path.write_text(
        "version: 1\n"
        "urls:\n"
        f"  - json://bot:{SECRET}@127.0.0.1:{push.port}/push{push_query}:\n"
        "      tag: alice-push\n"
        f"  - form://127.0.0.1:{sms.port}/sms?:token={SECRET}:\n"
        "      tag: alice-sms, on-call\n")
    path.chmod(0o600)
    return path


def make_acts(redis: aioredis.Redis, http: httpx.AsyncClient, smtp_port: int,
              config: Path | None, **smtp: Any) -> IncidentActivities:
    return IncidentActivities(
        redis, http, SmtpSettings(host="127.0.0.1", port=smtp_port, sender=SENDER, **smtp),
        apprise=AppriseChannel(config, timeout_seconds=5), public_url=PUBLIC)


def request(*, channels: tuple[Channel, ...], key: str | None = None,
            webhook: str | None = None, email: str | None = "alice@example.test",
            tags: tuple[str, ...] = ("alice-push", "alice-sms"), subject: str = "[HIGH] Ad",
            message: str = "A post about our ad is spreading.",
            **extra: Any) -> NotifyRequest:
    return NotifyRequest(
        idempotency_key=key or f"inc-1:step:{uuid.uuid4().hex[:8]}:alice",
        incident_id="inc-1", step_id="approve-statement", kind="task",
        recipient=Recipient(person_id="alice", name="Alice Martin", email=email,
                            webhook=webhook, apprise_tags=list(tags)),
        channels=list(channels), subject=subject, message=message, **extra)


def form(received: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(received.body.decode()).items()}


# ---- Apprise ---------------------------------------------------------------------------


async def test_apprise_delivers_to_each_tagged_service_once(
        tmp_path: Path, redis_client: aioredis.Redis, http_client: httpx.AsyncClient,
        push: HttpReceiver, sms: HttpReceiver, smtp: SmtpReceiver,
        capsys: pytest.CaptureFixture[str]) -> None:
    acts = make_acts(redis_client, http_client, smtp.port, apprise_config(tmp_path, push, sms))
    req = request(channels=("apprise",), task_id="task-7")

    result = await acts.notify(req)

    assert result.delivered == ["apprise"]
    [pushed] = push.requests
    assert pushed.headers["authorization"].startswith("Basic ")  # the secret went there only
    body = pushed.json()
    assert body["title"] == "[HIGH] Ad"
    assert body["message"].startswith("A post about our ad is spreading.")
    assert f"Open the task: {PUBLIC}/ui/tasks/task-7" in body["message"]
    assert f"Open the incident: {PUBLIC}/ui/incidents/inc-1" in body["message"]
    [texted] = sms.requests
    assert form(texted)["token"] == SECRET and form(texted)["title"] == "[HIGH] Ad"
    assert [(r.channel, r.status) for r in result.receipts] == [("apprise", "delivered")] * 2
    labels = [r.target or "" for r in result.receipts]
    assert labels[0].startswith("apprise:alice-push JSON#")
    assert labels[1].startswith("apprise:alice-sms Form#")

    again = await acts.notify(req)

    assert again.already_done == ["apprise"] and again.delivered == []
    assert [r.status for r in again.receipts] == ["already_delivered"] * 2
    assert push.count == 1 and sms.count == 1
    # the secret-bearing URLs never reach a result or a log line
    assert SECRET not in result.model_dump_json() + again.model_dump_json()
    assert SECRET not in capsys.readouterr().out


async def test_apprise_tag_without_a_service_and_no_config_are_skipped(
        tmp_path: Path, redis_client: aioredis.Redis, http_client: httpx.AsyncClient,
        push: HttpReceiver, sms: HttpReceiver) -> None:
    acts = make_acts(redis_client, http_client, free_port(), apprise_config(tmp_path, push, sms))
    result = await acts.notify(request(channels=("log", "apprise"), tags=("bob-pager",)))
    assert result.delivered == ["log"]
    assert [(r.status, r.reason) for r in result.receipts if r.channel == "apprise"] == [
        ("skipped", "no Apprise service is tagged 'bob-pager'")]
    # the log is a record, not a way to reach someone: no service matched, so unreachable
    assert result.unreachable() and not result.reached()

    unconfigured = make_acts(redis_client, http_client, free_port(), None)
    result = await unconfigured.notify(request(channels=("apprise",)))
    assert result.skipped == {"apprise": "Apprise is not configured (set CRISIS_APPRISE_CONFIG)"}
    assert result.unreachable()


async def test_retry_after_partial_failure_resends_only_to_failed_targets(
        tmp_path: Path, redis_client: aioredis.Redis, http_client: httpx.AsyncClient,
        push: HttpReceiver, sms: HttpReceiver, smtp: SmtpReceiver) -> None:
    acts = make_acts(redis_client, http_client, smtp.port, apprise_config(tmp_path, push, sms))
    push.answer(503, 200)
    with HttpReceiver(statuses=[500, 200]) as hook:
        req = request(channels=("log", "webhook", "email", "apprise"), webhook=hook.url())

        with pytest.raises(ApplicationError) as failure:
            await acts.notify(req)

        assert failure.value.type == "DeliveryFailed" and not failure.value.non_retryable
        partial = NotifyResult.from_failure_details(failure.value.details)
        assert partial is not None
        assert {(r.channel, r.status, r.permanent) for r in partial.receipts} == {
            ("log", "delivered", False), ("email", "delivered", False),
            ("webhook", "failed", False), ("apprise", "failed", False),
            ("apprise", "delivered", False)}
        assert not partial.unreachable() and partial.delayed()

        retried = await acts.notify(req)

        assert sorted(retried.delivered) == ["apprise", "webhook"]
        assert retried.already_done == ["log", "email"]
        assert {(r.target or r.channel).split(" ")[0]: r.status for r in retried.receipts} == {
            "log": "already_delivered", "webhook": "delivered", "email": "already_delivered",
            "apprise:alice-push": "delivered", "apprise:alice-sms": "already_delivered"}
        assert (hook.count, push.count, sms.count, len(smtp.messages)) == (2, 2, 1, 1)
    assert len(await feed(redis_client, "alice")) == 1


async def test_worker_retry_delivers_only_the_missing_apprise_service(
        time_env: WorkflowEnvironment, tmp_path: Path, redis_client: aioredis.Redis,
        http_client: httpx.AsyncClient, push: HttpReceiver, sms: HttpReceiver) -> None:
    acts = make_acts(redis_client, http_client, free_port(), apprise_config(tmp_path, push, sms))
    push.answer(502, 502, 200)

    result = await run_probe(time_env, acts, NotifyProbe, request(channels=("log", "apprise")))

    assert result.delivered == ["apprise"] and result.already_done == ["log"]
    assert (push.count, sms.count) == (3, 1)


async def test_every_channel_refusing_makes_the_recipient_unreachable(
        tmp_path: Path, redis_client: aioredis.Redis, http_client: httpx.AsyncClient,
        push: HttpReceiver, sms: HttpReceiver, smtp: SmtpReceiver) -> None:
    acts = make_acts(redis_client, http_client, smtp.port, apprise_config(tmp_path, push, sms))
    push.answer(404)
    sms.answer(401)
    smtp.reply_with("550 5.1.1 No such user")
    with HttpReceiver(statuses=[410]) as hook:
        req = request(channels=("log", "webhook", "email", "apprise"), webhook=hook.url())
        with pytest.raises(ApplicationError) as failure:
            await acts.notify(req)
    assert failure.value.type == "DeliveryRejected" and failure.value.non_retryable
    result = NotifyResult.from_failure_details(failure.value.details)
    assert result is not None and result.unreachable() and not result.reached()
    assert not result.delayed()
    reasons = {r.target or r.channel: r.reason or "" for r in result.receipts
               if r.status == "failed"}
    assert all(r.endswith("HTTP 404") for k, r in reasons.items() if "alice-push" in k)
    assert all(r.endswith("HTTP 401") for k, r in reasons.items() if "alice-sms" in k)
    assert "550" in reasons["email"] and "HTTP 410" in reasons["webhook"]

    # The same key again: nothing is re-sent and the refusals are remembered.
    with pytest.raises(ApplicationError):
        await acts.notify(req)
    assert (push.count, sms.count) == (1, 1) and smtp.attempts == 1


async def test_one_channel_delivered_means_reachable(
        tmp_path: Path, redis_client: aioredis.Redis, http_client: httpx.AsyncClient,
        push: HttpReceiver, sms: HttpReceiver, smtp: SmtpReceiver) -> None:
    acts = make_acts(redis_client, http_client, smtp.port, apprise_config(tmp_path, push, sms))
    push.answer(400)
    sms.answer(400)
    with pytest.raises(ApplicationError) as failure:
        await acts.notify(request(channels=("email", "apprise")))
    result = NotifyResult.from_failure_details(failure.value.details)
    assert result is not None and result.reached() and not result.unreachable()


# ---- escaping ----------------------------------------------------------------------------


def _only_our_slack_links(text: str) -> list[str]:
    return re.findall(r"<([^>]*)>", text)


async def test_hostile_text_arrives_escaped_on_every_channel(
        tmp_path: Path, redis_client: aioredis.Redis, http_client: httpx.AsyncClient,
        smtp: SmtpReceiver) -> None:
    with HttpReceiver() as hook, HttpReceiver() as push, HttpReceiver() as md_push, \
            HttpReceiver() as html_push:
        config = tmp_path / "apprise.txt"  # the TEXT config format this time
        config.write_text(
            f"alice-text=json://127.0.0.1:{push.port}/t\n"
            f"alice-md=json://127.0.0.1:{md_push.port}/m?format=markdown\n"
            f"alice-html=json://127.0.0.1:{html_push.port}/h?format=html\n")
        config.chmod(0o600)
        acts = make_acts(redis_client, http_client, smtp.port, config)
        req = request(channels=("log", "webhook", "email", "apprise"), webhook=hook.url(),
                      tags=("alice-text", "alice-md", "alice-html"),
                      subject=f"[HIGH] {HOSTILE}", message=f"Report:\n{HOSTILE}",
                      task_id="task-1",
                      action_links=[MessageLink(label="Approve <now>", url=f"{PUBLIC}/a/1"),
                                    MessageLink(label="evil", url="javascript:alert(1)")])

        result = await acts.notify(req)
        assert sorted(result.delivered) == ["apprise", "email", "log", "webhook"]

        # Slack mrkdwn: `& < >` escaped; the only <...> tokens are our own links.
        slack = hook.requests[0].json()
        mrkdwn = [block["text"]["text"] for block in slack["blocks"]
                  if block["type"] == "section"]
        for text in [slack["text"], *mrkdwn]:
            assert "<!channel>" not in text and "<https://evil.example" not in text
            assert "<script>" not in text
            for token in _only_our_slack_links(text):
                assert token.startswith(f"{PUBLIC}/ui/"), token
        assert "&lt;!channel&gt; &lt;https://evil.example|click here&gt; &amp;" in mrkdwn[0]
        buttons = next(b for b in slack["blocks"] if b["type"] == "actions")["elements"]
        assert [(b["text"]["text"], b["url"]) for b in buttons] == [
            ("Approve <now>", f"{PUBLIC}/a/1")]  # plain_text: no markup; javascript: dropped
        assert slack["blocks"][0]["text"] == {"type": "plain_text",
                                              "text": f"[HIGH] {HOSTILE}"[:150]}

        # HTML email: escaped, links only ours, with a plain-text part carrying the text.
        [mail] = smtp.messages
        html_part = mail.get_body(("html",))
        plain_part = mail.get_body(("plain",))
        assert html_part is not None and plain_part is not None
        html = html_part.get_content()
        assert "<script>" not in html and "&lt;script&gt;" in html
        assert re.findall(r'href="([^"]+)"', html) == [
            f"{PUBLIC}/a/1", f"{PUBLIC}/ui/tasks/task-1", f"{PUBLIC}/ui/incidents/inc-1"]
        assert "javascript:" not in html
        assert HOSTILE in plain_part.get_content()
        assert mail["Subject"] == f"[HIGH] {HOSTILE}"

        # Apprise, plain text: JSON-encoded, the text arrives exactly as typed.
        text_body = push.requests[0].json()
        assert text_body["title"] == f"[HIGH] {HOSTILE}" and HOSTILE in text_body["message"]

        # Apprise, Markdown: rendering it gives no link to evil and no script.
        rendered = markdown_lib.markdown(md_push.requests[0].json()["message"])
        assert "<script>" not in rendered and 'href="https://evil.example"' not in rendered
        assert "<strong>bold</strong>" not in rendered
        assert re.findall(r'href="([^"]+)"', rendered) == [
            f"{PUBLIC}/a/1", f"{PUBLIC}/ui/tasks/task-1", f"{PUBLIC}/ui/incidents/inc-1"]

        # Apprise, HTML: escaped like the email.
        html_body = html_push.requests[0].json()["message"]
        assert "<script>" not in html_body and "&lt;script&gt;" in html_body

        # The log feed stores data (JSON), never markup.
        [logged] = await feed(redis_client, "alice")
        assert HOSTILE in logged["message"]
        assert logged["links"][0] == {"label": "Open the task",
                                      "url": f"{PUBLIC}/ui/tasks/task-1"}


def test_directory_takes_tags_and_refuses_urls() -> None:
    person = Person(id="lena-legal", name="Lena", apprise_tags=["lena-sms", "legal.pager"])
    assert person.apprise_tags == ["lena-sms", "legal.pager"]
    with pytest.raises(ValueError, match="put URLs in the Apprise config file"):
        Person(id="lena-legal", name="Lena", apprise_tags=["msteams://token/secret"])


# ---- SMTP with TLS and login ----------------------------------------------------------------


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_smtp_over_tls_with_login(redis_client: aioredis.Redis,
                                        http_client: httpx.AsyncClient,
                                        security: Any) -> None:
    with SmtpReceiver(security=security, credentials=("relay-user", "relay-pass")) as relay:
        acts = make_acts(redis_client, http_client, relay.port, None, security=security,
                         username="relay-user", password="relay-pass", ca_file=relay.ca_file)
        result = await acts.notify(request(channels=("email",)))

        assert result.delivered == ["email"]
        [mail] = relay.messages
        assert mail["X-Received-Login"] == "relay-user" and mail["X-Received-TLS"] == "yes"

        wrong = make_acts(redis_client, http_client, relay.port, None, security=security,
                          username="relay-user", password="nope", ca_file=relay.ca_file)
        with pytest.raises(ApplicationError) as failure:
            await wrong.notify(request(channels=("email",)))
        assert failure.value.type == "InfrastructureUnavailable"
        assert not failure.value.non_retryable
        assert "nope" not in failure.value.message and relay.auth_failures >= 1


async def test_smtp_relay_that_demands_starttls_refuses_plain_senders(
        redis_client: aioredis.Redis, http_client: httpx.AsyncClient) -> None:
    with SmtpReceiver(security="starttls", credentials=("u", "p")) as relay:
        plain = make_acts(redis_client, http_client, relay.port, None)
        with pytest.raises(ApplicationError) as failure:
            await plain.notify(request(channels=("email",)))
        assert failure.value.type == "InfrastructureUnavailable"
        untrusted = make_acts(redis_client, http_client, relay.port, None, security="starttls",
                              username="u", password="p")  # system CAs: self-signed fails
        with pytest.raises(ApplicationError) as failure:
            await untrusted.notify(request(channels=("email",)))
        assert failure.value.type == "InfrastructureUnavailable"
        assert "TLS" in failure.value.message or "SSL" in failure.value.message
        assert relay.messages == []


# ---- infrastructure outages --------------------------------------------------------------


async def test_redis_down_is_an_infrastructure_failure(http_client: httpx.AsyncClient) -> None:
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=1,
                          retry=Retry(NoBackoff(), 0))
    acts = make_acts(dead, http_client, free_port(), None)
    with pytest.raises(ApplicationError) as failure:
        await acts.notify(request(channels=("log",)))
    assert failure.value.type == "InfrastructureUnavailable"
    assert not failure.value.non_retryable
    await dead.aclose()


async def test_redis_down_during_an_action_is_an_infrastructure_failure(
        http_client: httpx.AsyncClient) -> None:
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=1,
                          retry=Retry(NoBackoff(), 0))
    acts = make_acts(dead, http_client, free_port(), None)
    with HttpReceiver() as publish:
        with pytest.raises(ApplicationError) as failure:
            await acts.run_action(ActionRequest(
                idempotency_key="inc-1:publish", incident_id="inc-1", step_id="publish",
                url=publish.url(), payload={"statement": "We hear you."}))
        assert publish.count == 0  # never sent without its idempotency record
    assert failure.value.type == "InfrastructureUnavailable"
    assert not failure.value.non_retryable
    await dead.aclose()


async def test_smtp_relay_down_is_an_infrastructure_failure(
        redis_client: aioredis.Redis, http_client: httpx.AsyncClient) -> None:
    acts = make_acts(redis_client, http_client, free_port(), None)
    with pytest.raises(ApplicationError) as failure:
        await acts.notify(request(channels=("log", "email")))
    assert failure.value.type == "InfrastructureUnavailable"
    partial = NotifyResult.from_failure_details(failure.value.details)
    assert partial is not None and not partial.unreachable() and partial.delayed()
    [email] = [r for r in partial.receipts if r.channel == "email"]
    assert email.status == "failed" and email.infrastructure and not email.permanent


def test_request_without_structured_fields_still_validates() -> None:
    """Histories recorded before the structured fields existed still deserialize."""
    old = json.dumps({"idempotency_key": "k", "incident_id": "i", "step_id": "s",
                      "kind": "notify", "channels": ["log"], "subject": "S", "message": "M",
                      "recipient": {"person_id": "p", "name": "P"}})
    req = NotifyRequest.model_validate_json(old)
    assert req.body == [] and req.task_id is None and req.recipient.apprise_tags == []
    assert NotifyResult.model_validate_json('{"delivered": ["log"]}').receipts == []


def test_example_apprise_config_covers_the_demo_directory() -> None:
    directory = load_directory(ROOT / "config" / "directory.yaml").definition
    tags = [tag for person in directory.people for tag in person.apprise_tags]
    assert tags, "the demo directory shows how people get Apprise tags"
    targets, unknown = AppriseChannel(ROOT / "config" / "apprise.example.yaml").targets(tags)
    assert unknown == [] and len(targets) == len(tags)
    assert all(target.url.startswith("json://127.0.0.1:8000/demo/sink/") for target in targets)


async def test_redis_outage_is_retried_and_delivers_once_it_is_back(
        dev_env: WorkflowEnvironment, tmp_path: Path, http_client: httpx.AsyncClient,
        push: HttpReceiver, sms: HttpReceiver) -> None:
    """Through a real worker: the first attempt finds Redis down (InfrastructureUnavailable,
    retryable); Redis comes up; the retry delivers, once, to every service."""
    port = free_port()
    redis = aioredis.Redis(port=port, decode_responses=True, socket_connect_timeout=0.5,
                           retry=Retry(NoBackoff(), 0))
    acts = make_acts(redis, http_client, free_port(), apprise_config(tmp_path, push, sms))
    probe = asyncio.create_task(run_probe(dev_env, acts, NotifyProbe,
                                          request(channels=("log", "apprise"))))
    await asyncio.sleep(0.5)  # the first attempt has failed by now (retry in 1 s)
    assert not probe.done() and push.count == 0
    with redis_server(port):
        result = await asyncio.wait_for(probe, 30)
        assert sorted(result.delivered) == ["apprise", "log"]
        assert (push.count, sms.count) == (1, 1)
        assert len(await feed(redis, "alice")) == 1
    await redis.aclose()


def test_recipient_for_a_person_carries_their_apprise_tags() -> None:
    person = Person(id="lena-legal", name="Lena", email="lena@example.test",
                    apprise_tags=["lena-sms"])
    recipient = Recipient.for_person(person)
    assert (recipient.person_id, recipient.email, recipient.apprise_tags) == (
        "lena-legal", "lena@example.test", ["lena-sms"])


async def test_receipts_of_a_refused_notification_survive_temporal(
        time_env: WorkflowEnvironment, tmp_path: Path, redis_client: aioredis.Redis,
        http_client: httpx.AsyncClient, push: HttpReceiver, sms: HttpReceiver) -> None:
    """What the workflow sees: `ActivityError.cause.details` -> NotifyResult.unreachable()."""
    acts = make_acts(redis_client, http_client, free_port(), apprise_config(tmp_path, push, sms))
    push.answer(404)
    sms.answer(403)
    with pytest.raises(WorkflowFailureError) as failure:
        await run_probe(time_env, acts, NotifyProbe,
                        request(channels=("log", "email", "apprise"), email=None))
    activity_error = failure.value.cause
    assert isinstance(activity_error, ActivityError)
    assert activity_error.retry_state == RetryState.NON_RETRYABLE_FAILURE
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError) and cause.type == "DeliveryRejected"
    result = NotifyResult.from_failure_details(cause.details)
    assert result is not None and result.unreachable()
    assert [(r.channel, r.status) for r in result.receipts] == [
        ("log", "delivered"), ("email", "skipped"), ("apprise", "failed"), ("apprise", "failed")]
    assert (push.count, sms.count) == (1, 1)  # permanent: no retry


async def test_apprise_never_retries_on_its_own(
        tmp_path: Path, redis_client: aioredis.Redis, http_client: httpx.AsyncClient) -> None:
    """Even a URL that asks for retries gets one try per attempt: Temporal decides."""
    with HttpReceiver(statuses=[503]) as pager:
        config = tmp_path / "apprise.txt"
        config.write_text(f"alice-pager=json://127.0.0.1:{pager.port}/p?retry=5&wait=0\n")
        acts = make_acts(redis_client, http_client, free_port(), config)
        with pytest.raises(ApplicationError) as failure:
            await acts.notify(request(channels=("apprise",), tags=("alice-pager",)))
        assert failure.value.type == "DeliveryFailed" and "HTTP 503" in failure.value.message
        assert pager.count == 1


async def test_action_link_hook_adds_one_click_links_to_task_messages(
        redis_client: aioredis.Redis, http_client: httpx.AsyncClient,
        smtp: SmtpReceiver) -> None:
    """The worker passes a hook that signs links in the activity (never in the history)."""
    def links(req: NotifyRequest) -> list[tuple[str, str]]:
        if req.task_id is None:
            return []
        return [("Approve", f"{PUBLIC}/ui/act/{req.task_id}/approve?sig=abc"),
                ("Reject with a reason", f"{PUBLIC}/ui/act/{req.task_id}/reject?sig=def")]

    acts = IncidentActivities(redis_client, http_client,
                              SmtpSettings(host="127.0.0.1", port=smtp.port, sender=SENDER),
                              public_url=PUBLIC, action_links=links)
    with HttpReceiver() as hook:
        await acts.notify(request(channels=("webhook", "email"), webhook=hook.url(),
                                  task_id="task-9"))
        await acts.notify(request(channels=("webhook",), webhook=hook.url()))
        task_message, plain_message = (r.json() for r in hook.requests)
    [buttons] = [b["elements"] for b in task_message["blocks"] if b["type"] == "actions"]
    assert [b["url"] for b in buttons] == [f"{PUBLIC}/ui/act/task-9/approve?sig=abc",
                                           f"{PUBLIC}/ui/act/task-9/reject?sig=def"]
    assert not [b for b in plain_message["blocks"] if b["type"] == "actions"]
    html_part = smtp.messages[0].get_body(("html",))
    assert html_part is not None
    assert 'href="https://crisis.example.test/ui/act/task-9/approve?sig=abc"' in \
        html_part.get_content()
