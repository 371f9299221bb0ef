"""How `run_action` classifies a failed call, against real loopback receivers and Redis.

An ordinary action is retried with the same Idempotency-Key whenever the receiver may
answer better later, including a 409 ("a request with this key is still being processed").
An at-most-once action is retried only when nothing can have been processed; anything
that may have reached the receiver is `ActionOutcomeUnknown` (never retried), and so is a
retry attempt itself: the attempt before it may have sent the call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import IncidentActivities, SmtpSettings
from domain.effects import ActionRequest
from tests.receivers import HttpReceiver, SlowIdempotentReceiver
from tests.servers import free_port


@pytest.fixture
async def acts(redis_client: aioredis.Redis) -> AsyncIterator[IncidentActivities]:
    async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
        yield IncidentActivities(redis_client, http, SmtpSettings(host="127.0.0.1", port=9,
                                                                  sender="ce@example.test"))


def request(url: str, *, once: bool = True, key: str = "inc-1:publish") -> ActionRequest:
    return ActionRequest(idempotency_key=key, incident_id="inc-1", step_id="publish", url=url,
                         payload={"text": "We hear you."}, at_most_once=once)


async def failure(acts: IncidentActivities, req: ActionRequest) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        await acts.run_action(req)
    return raised.value


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_at_most_once_5xx_that_may_have_been_done_is_unknown(
        acts: IncidentActivities, status: int) -> None:
    with HttpReceiver(statuses=[status]) as hook:
        error = await failure(acts, request(hook.url()))
    assert (error.type, error.non_retryable) == ("ActionOutcomeUnknown", True)
    assert hook.count == 1


@pytest.mark.parametrize("status", [503, 429, 408])
async def test_at_most_once_answers_that_say_nothing_was_done_are_retryable(
        acts: IncidentActivities, status: int) -> None:
    with HttpReceiver(statuses=[status]) as hook:
        error = await failure(acts, request(hook.url()))
    assert (error.type, error.non_retryable) == ("DeliveryFailed", False)


async def test_at_most_once_with_no_connection_is_retryable(acts: IncidentActivities) -> None:
    error = await failure(acts, request(f"http://127.0.0.1:{free_port()}/publish"))
    assert (error.type, error.non_retryable) == ("DeliveryFailed", False)


async def test_at_most_once_timeout_after_sending_is_unknown(acts: IncidentActivities) -> None:
    with SlowIdempotentReceiver(delay=2.0) as slow:  # the client gives up after 1 s
        error = await failure(acts, request(slow.url("/plain/publish")))
        assert (error.type, error.non_retryable) == ("ActionOutcomeUnknown", True)
        assert len(slow.requests) == 1


async def test_a_retry_attempt_of_an_at_most_once_action_sends_nothing(
        acts: IncidentActivities, redis_client: aioredis.Redis) -> None:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2)
    with HttpReceiver() as hook:
        with pytest.raises(ApplicationError) as raised:
            await env.run(acts.run_action, request(hook.url()))
        assert raised.value.type == "ActionOutcomeUnknown"
        assert hook.count == 0
        # but an attempt that finished before the crash left its result: that is returned
        first = ActivityEnvironment()
        done = await first.run(acts.run_action, request(hook.url(), key="inc-2:publish"))
        again = await env.run(acts.run_action, request(hook.url(), key="inc-2:publish"))
    assert (done.status_code, again.already_done) == (200, True)
    assert hook.count == 1


async def test_an_ordinary_action_retries_a_409_in_flight_and_heartbeats(
        acts: IncidentActivities) -> None:
    with HttpReceiver(statuses=[409]) as hook:
        error = await failure(acts, request(hook.url(), once=False))
    assert (error.type, error.non_retryable) == ("DeliveryFailed", False)
    beats: list[object] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    with SlowIdempotentReceiver(delay=0.5) as slow:
        result = await env.run(acts.run_action, request(slow.url("/dedup/p"), once=False))
    assert result.status_code == 200
    assert len(beats) >= 1  # the call is watched while in flight
