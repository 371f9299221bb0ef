"""The data converter every crisis-engine client and worker uses: Pydantic JSON, built once.

`temporalio.contrib.pydantic.pydantic_data_converter` names its payload converter by class,
and the SDK (1.35) builds a fresh `DataConverter` around that class twice for every workflow
activation (once to decode it, once to encode the completion), each time constructing a new
`PydanticPayloadConverter`: a composite of six converters, a schema serializer and an empty
type-adapter cache. The payloads themselves are then converted by the worker's long-lived
converter, so each of those instances is built only to be thrown away; on the interpreter
benchmark that was about 3% of the worker's Python time.

`SharedPydanticPayloadConverter()` returns one instance per process instead. It is safe to
share: the converter holds no per-call state (the SDK's own long-lived converter is already
shared by every workflow thread), its type-adapter cache is a thread-safe `lru_cache`, and
none of its component converters takes a serialization context, so `with_context` returns
the same instance. Payload bytes are identical to `pydantic_data_converter`'s, so histories
recorded with either replay with both.
"""

from __future__ import annotations

import threading
from typing import ClassVar, Self

from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter


class SharedPydanticPayloadConverter(PydanticPayloadConverter):
    """`PydanticPayloadConverter` with default options, constructed once per process."""

    _instance: ClassVar[SharedPydanticPayloadConverter | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __new__(cls) -> Self:
        instance = cls._instance
        if instance is None:
            with cls._lock:
                instance = cls._instance
                if instance is None:
                    instance = super().__new__(cls)
                    PydanticPayloadConverter.__init__(instance)
                    cls._instance = instance
        assert isinstance(instance, cls)
        return instance

    def __init__(self) -> None:
        """Already initialised once, in `__new__`."""


DATA_CONVERTER = DataConverter(payload_converter_class=SharedPydanticPayloadConverter)
"""Pass this wherever a Temporal client, worker, replayer or test environment is made."""
