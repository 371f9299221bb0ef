"""One copy per worker process of each pinned playbook and directory snapshot.

Every incident's start input carries the playbook and directory it pinned, and decoding it
gives every cached incident its own copy: ~50 KB each for the shipped playbook and demo
directory, more with a real directory. Most incidents pin the same few versions, so
`shared(snapshot)` hands back the first copy seen with identical content and lets the new
one go. Identical means the canonical JSON is equal (its sha256 is computed here, never
taken from the input's `sha256` field), so two incidents share an object only when they
would behave the same with their own.

Shared snapshots are read-only by convention, and the code keeps to it: the ledger derives
what it needs (`TimeOff.apply` returns a copy, never edits the directory it was given).
The workflow runs activations on several threads; the map is only read, filled with
`setdefault` and cleared when full, each atomic under the GIL, so a race costs at most a
second copy, never a wrong one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

LIMIT = 256  # distinct versions kept; past it the map starts over (copies stay valid)

_shared: dict[tuple[type[BaseModel], str], BaseModel] = {}


def content_key(model: BaseModel) -> str:
    return hashlib.sha256(model.__pydantic_serializer__.to_json(model)).hexdigest()


def shared(model: M) -> M:
    """The process's copy of `model`'s content (`model` itself, the first time)."""
    key = (type(model), content_key(model))
    found = _shared.get(key)
    if found is None:
        if len(_shared) >= LIMIT:
            _shared.clear()
        found = _shared.setdefault(key, model)
    assert isinstance(found, type(model))
    return found


def shared_from(model_type: type[M], key: str, make: Callable[[], M]) -> M:
    """The process's copy of what `make()` builds from a content whose hash is `key` (built
    only the first time: for models whose building is the cost, e.g. a parsed directory)."""
    found = _shared.get((model_type, f"from:{key}"))
    if found is None:
        built = make()
        if len(_shared) >= LIMIT:
            _shared.clear()
        found = _shared.setdefault((model_type, f"from:{key}"), built)
    assert isinstance(found, model_type)
    return found


def cached() -> int:
    """How many distinct snapshots the process holds (for tests and the bench)."""
    return len(_shared)
