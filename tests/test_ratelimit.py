"""Rate limits on intake: per user and per route, 429 with Retry-After, documented in OpenAPI.

Runs its own stack (real app, worker, Temporal dev server and Redis) with a tight limit.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.api_fixtures import ApiStack, _run_stack, with_db, write_matrix_config

pytestmark = pytest.mark.stack

REPORT_LIMIT = 20


@pytest.fixture(scope="module")
async def limited_stack(dev_env: WorkflowEnvironment, redis_url: str,
                        tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiStack]:
    workdir = tmp_path_factory.mktemp("limited-stack")
    async for stack in _run_stack(dev_env, with_db(redis_url, 6), workdir,
                                  *write_matrix_config(workdir),
                                  rate_limit_reports=f"{REPORT_LIMIT}/minute;1000/hour",
                                  rate_limit_incidents="2/minute"):
        await stack.redis.flushdb()
        yield stack


async def test_a_burst_from_one_token_is_cut_at_the_limit_and_opens_one_incident(
        limited_stack: ApiStack) -> None:
    stack = limited_stack
    body = {"summary": "Prank video from our kitchen", "dedup_key": "video:burst",
            "severity": "high"}
    gate = asyncio.Semaphore(10)  # bounded, like a client with a connection pool

    async def report(_: int) -> httpx.Response:
        async with gate:
            return await stack.call("POST", "/reports", "rita", json=body)

    responses = await asyncio.gather(*(report(n) for n in range(1000)))

    statuses = Counter(r.status_code for r in responses)
    assert statuses[201] == 1 and statuses[202] == REPORT_LIMIT - 1, statuses
    assert statuses[429] == 1000 - REPORT_LIMIT, statuses
    assert not [r for r in responses if r.status_code >= 500]
    limited = [r for r in responses if r.status_code == 429]
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in limited)
    assert limited[0].json()["error"] == "RateLimited"
    incident_ids = {r.json()["incident_id"] for r in responses if r.status_code < 300}
    assert len(incident_ids) == 1

    # Other people reporting the same post are never dropped: the budget is per user.
    for person in ("cora", "alex", "abby", "liam", "adam", "dora"):
        response = await stack.call("POST", "/reports", person, json=body)
        assert response.status_code == 202, response.text  # accepted for the open incident
        assert response.json()["incident_id"] in incident_ids

    listed = await stack.call("GET", "/incidents", "adam")
    assert listed.status_code == 200
    burst = [item for item in listed.json()["items"] if item["id"] in incident_ids]
    assert len(listed.json()["items"]) == 1 and len(burst) == 1


async def test_an_unbounded_flood_from_one_token_is_cut_at_the_limit_too(
        limited_stack: ApiStack) -> None:
    """300 requests at once from one token (a script, not a browser): the limiter's Redis
    connections must queue like the API's own. With redis-py's default pool (100
    connections, then "Too many connections") the limiter failed open and let a third of
    such a flood through."""
    stack = limited_stack
    for stale in await stack.redis.keys("ce:ratelimit*"):
        await stack.redis.delete(stale)
    body = {"summary": "Flood from a script", "dedup_key": "video:flood", "severity": "high"}
    responses = await asyncio.gather(*(stack.call("POST", "/reports", "liam", json=body)
                                       for _ in range(300)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses[429] == 300 - REPORT_LIMIT, statuses
    assert statuses[201] + statuses[202] == REPORT_LIMIT, statuses


async def test_routes_have_their_own_budgets(limited_stack: ApiStack) -> None:
    stack = limited_stack
    body = {"title": "Budget", "summary": "one route's budget", "severity": "low",
            "playbook": "matrix-quiet", "dedup_key": "budget"}
    first = [await stack.call("POST", "/incidents", "cora", json=body) for _ in range(3)]
    assert [r.status_code for r in first] == [201, 200, 429]
    # the reports budget of the same person is untouched by their /incidents calls
    report = await stack.call("POST", "/reports", "cora",
                              json={"summary": "still heard", "dedup_key": "budget"})
    assert report.status_code in (200, 201, 202)


async def test_openapi_documents_the_limit(limited_stack: ApiStack) -> None:
    schema = (await limited_stack.call("GET", "/openapi.json")).json()
    for path in ("/reports", "/incidents"):
        documented = schema["paths"][path]["post"]["responses"]["429"]
        assert "Retry-After" in documented["headers"]
        assert f"CRISIS_RATE_LIMIT_{path[1:].upper()}" in documented["description"]
        assert "per user" in documented["description"]
        assert documented["content"]["application/json"]["example"]["error"] == "RateLimited"
    assert "429" not in schema["paths"]["/incidents"]["get"]["responses"]


async def test_a_rate_limited_request_can_be_retried_with_its_idempotency_key(
        limited_stack: ApiStack) -> None:
    stack = limited_stack
    body = {"title": "Keyed", "summary": "keyed retry", "severity": "low",
            "playbook": "matrix-quiet", "dedup_key": "keyed"}
    for _ in range(2):  # use up adam's /incidents budget (2/minute)
        await stack.call("POST", "/incidents", "adam", json={**body, "dedup_key": "other"})
    key = {"Idempotency-Key": "retry-after-429"}
    limited = await stack.call("POST", "/incidents", "adam", json=body, headers=key)
    assert limited.status_code == 429
    # the window passes (here: its Redis entries go), and the same key goes through
    for stale in await stack.redis.keys("ce:ratelimit*"):
        await stack.redis.delete(stale)
    retried = await stack.call("POST", "/incidents", "adam", json=body, headers=key)
    assert retried.status_code == 201, retried.text
