"""`core.payloads.DATA_CONVERTER`: what every client, worker and replayer converts with.

It must write exactly the bytes the SDK's `pydantic_data_converter` writes (histories
recorded before it, and workers of an older release still running during a rolling
deploy, read and write the same payloads), and it must not build a converter per call.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from temporalio.contrib.pydantic import pydantic_data_converter

from core.payloads import DATA_CONVERTER, SharedPydanticPayloadConverter
from domain.incident import StartIncident
from tests.factories import snapshot, start_input, viral_playbook


def test_payloads_are_byte_for_byte_the_sdk_pydantic_ones() -> None:
    start = start_input(snapshot(viral_playbook("https://example.test/publish")),
                        incident_id="inc-1")
    ours = asyncio.run(DATA_CONVERTER.encode([start]))
    stock = asyncio.run(pydantic_data_converter.encode([start]))
    assert [p.SerializeToString() for p in ours] == [p.SerializeToString() for p in stock]
    [back] = asyncio.run(DATA_CONVERTER.decode(stock, [StartIncident]))
    assert back == start


def test_one_payload_converter_per_process_even_across_threads() -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(lambda _: SharedPydanticPayloadConverter(), range(64)))
    assert all(converter is made[0] for converter in made)
    # the SDK rebuilds a DataConverter around the class for every workflow activation
    rebuilt = DATA_CONVERTER.with_context(None)  # type: ignore[arg-type]
    assert rebuilt.payload_converter is DATA_CONVERTER.payload_converter
