"""The worker skips the SDK's payload walks only where they cannot change a byte
(worker.payload_walks): a deployment with a codec still gets every payload through it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import PayloadCodec
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from worker import payload_walks
from worker.payload_walks import installed, sdk_is_checked, skip_unchanging_payload_walks

WRAPPED = b"binary/test-wrapped"


class WrappingCodec(PayloadCodec):
    """Wraps each payload whole (as an encrypting codec would); counts what it saw."""

    def __init__(self) -> None:
        self.encoded = self.decoded = 0

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.encoded += len(payloads)
        return [Payload(metadata={"encoding": WRAPPED}, data=p.SerializeToString())
                for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.decoded += len(payloads)
        out = []
        for p in payloads:
            assert p.metadata.get("encoding") == WRAPPED, "a payload skipped the codec"
            inner = Payload()
            inner.ParseFromString(p.data)
            out.append(inner)
        return out


@activity.defn(name="walks_shout")
async def shout(text: str) -> str:
    return text.upper()


@workflow.defn(sandboxed=False)
class Echo:
    @workflow.run
    async def run(self, text: str) -> str:
        loud: str = await workflow.execute_activity(
            shout, text, start_to_close_timeout=timedelta(seconds=10))
        return f"{loud}!"


def _client(env: WorkflowEnvironment, codec: PayloadCodec | None) -> Client:
    config = env.client.config()
    if codec is not None:
        config["data_converter"] = config["data_converter"].__class__(
            payload_converter_class=config["data_converter"].payload_converter_class,
            payload_codec=codec)
    return Client(**config)


async def _echo(client: Client, text: str) -> tuple[str, list[Payload]]:
    """Run `Echo` on its own worker; its answer and every payload its history recorded."""
    queue = f"walks-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[Echo], activities=[shout]):
        handle = await client.start_workflow(Echo.run, text, id=f"walks-{uuid.uuid4().hex}",
                                             task_queue=queue,
                                             execution_timeout=timedelta(seconds=30))
        answer: str = await handle.result()
    payloads: list[Payload] = []
    for event in (await handle.fetch_history()).events:
        for attributes in (event.workflow_execution_started_event_attributes,
                           event.activity_task_scheduled_event_attributes):
            payloads.extend(attributes.input.payloads)
        for attributes in (event.activity_task_completed_event_attributes,
                           event.workflow_execution_completed_event_attributes):
            payloads.extend(attributes.result.payloads)
    return answer, payloads


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The SDK's walks, counted (the skip calls them for any converter that needs them)."""
    calls = {name: 0 for name in payload_walks.SDK_WALKS}
    for name, sdk_walk in list(payload_walks.SDK_WALKS.items()):
        async def walk(*args: Any, _name: str = name, _sdk: Any = sdk_walk) -> Any:
            calls[_name] += 1
            return await _sdk(*args)
        monkeypatch.setitem(payload_walks.SDK_WALKS, name, walk)
    assert skip_unchanging_payload_walks()
    return calls


def test_the_skip_is_installed_on_the_sdk_it_was_checked_on() -> None:
    """Fails on an SDK upgrade: re-check `worker.payload_walks` against the new SDK's
    `temporalio.bridge.worker` and add its version to CHECKED_SDK_VERSIONS."""
    assert sdk_is_checked()
    assert skip_unchanging_payload_walks() and installed()


async def test_with_a_codec_every_payload_still_goes_through_it(
        time_env: WorkflowEnvironment, counted: dict[str, int]) -> None:
    codec = WrappingCodec()
    answer, payloads = await _echo(_client(time_env, codec), "cold pizza")
    assert answer == "COLD PIZZA!"
    # the workflow's commands (activity input, its result) were encoded by the worker
    assert len(payloads) == 4
    assert all(p.metadata["encoding"] == WRAPPED for p in payloads)
    assert codec.decoded >= 2 and counted["decode_activation"] > 0 \
        and counted["encode_completion"] > 0


async def test_without_a_codec_the_walks_are_skipped_and_nothing_changes(
        time_env: WorkflowEnvironment, counted: dict[str, int]) -> None:
    answer, payloads = await _echo(_client(time_env, None), "cold pizza")
    assert answer == "COLD PIZZA!"
    assert len(payloads) == 4 and all(p.metadata["encoding"] == b"json/plain"
                                      for p in payloads)
    assert counted == {"decode_activation": 0, "encode_completion": 0}
