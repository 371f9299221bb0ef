"""Skip the SDK's payload walks over workflow activations when they cannot change a byte.

temporalio walks every workflow activation three times on its way in (storage references,
external storage, codec) and every completion three times on its way out, visiting each
payload and copying each payload list. With no payload codec and no external storage, as
crisis-engine runs, each walk hands every list back unchanged. Measured on this 2-core
machine (replaying `tests/histories/viral-complaint.v7-carried.json`, 152 events, 150 times,
three runs side by side): 35.2-36.6 ms per replay with the walks, 27.1-28.4 ms without; in a
py-spy profile of that replay the walks were about 45% of the worker's Python time. A
replay is what a decide on an evicted incident costs first (`docs/scaling.md`).

Skipped only where the converter of that activation has neither a codec nor external
storage; any other converter gets the SDK's walks, unchanged. One check is lost with the
skip: the SDK's error for an externally stored payload reaching a worker that has no
external storage configured (such a payload then fails to decode instead). Installed only
on the SDK versions it was checked against (`CHECKED_SDK_VERSIONS`), and only if the two
functions still have the signatures checked; otherwise the SDK is left as it is and a
warning says so. `tests/test_payload_walks.py` fails on an SDK upgrade until re-checked.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import temporalio
import temporalio.bridge.worker as sdk_bridge
from temporalio.converter import DataConverter
from temporalio.converter._extstore import StorageOperationMetrics

log = structlog.get_logger(__name__)

CHECKED_SDK_VERSIONS = frozenset({"1.35.0"})
_PARAMETERS = {
    "decode_activation": ["activation", "data_converter", "decode_headers",
                          "storage_concurrency_limit"],
    "encode_completion": ["completion", "data_converter", "encode_headers",
                          "storage_concurrency_limit"],
}

Walk = Callable[[Any, DataConverter, bool, int], Awaitable[StorageOperationMetrics]]
# the SDK's own functions, kept whatever is installed (a test swaps in counting ones)
SDK_WALKS: dict[str, Walk] = {name: getattr(sdk_bridge, name) for name in _PARAMETERS}


def walks_change_nothing(converter: DataConverter) -> bool:
    """With neither a codec nor external storage, every walk returns what it was given."""
    return converter.payload_codec is None and converter.external_storage is None


# Two functions, not one made twice: the SDK passes `decode_headers` / `encode_headers` and
# `storage_concurrency_limit` by keyword, so each keeps the SDK's parameter names.
async def decode_activation(activation: Any, data_converter: DataConverter,
                            decode_headers: bool, storage_concurrency_limit: int
                            ) -> StorageOperationMetrics:
    if walks_change_nothing(data_converter):
        return StorageOperationMetrics()
    return await SDK_WALKS["decode_activation"](activation, data_converter, decode_headers,
                                                storage_concurrency_limit)


async def encode_completion(completion: Any, data_converter: DataConverter,
                            encode_headers: bool, storage_concurrency_limit: int
                            ) -> StorageOperationMetrics:
    if walks_change_nothing(data_converter):
        return StorageOperationMetrics()
    return await SDK_WALKS["encode_completion"](completion, data_converter, encode_headers,
                                                storage_concurrency_limit)


_OURS: dict[str, Walk] = {"decode_activation": decode_activation,
                          "encode_completion": encode_completion}


def sdk_is_checked() -> bool:
    """This SDK version, with the functions and signatures this module was checked against."""
    if temporalio.__version__ not in CHECKED_SDK_VERSIONS:
        return False
    return all(list(inspect.signature(SDK_WALKS[name]).parameters) == params
               for name, params in _PARAMETERS.items())


def installed() -> bool:
    return all(getattr(sdk_bridge, name) is ours for name, ours in _OURS.items())


def skip_unchanging_payload_walks() -> bool:
    """Install the skip (idempotent) where the SDK is one it was checked on; whether it is."""
    if installed():
        return True
    if not sdk_is_checked():
        log.warning("payload_walks_kept", sdk_version=temporalio.__version__,
                    reason="SDK version or signatures not checked by worker.payload_walks")
        return False
    for name, ours in _OURS.items():
        setattr(sdk_bridge, name, ours)
    return True
