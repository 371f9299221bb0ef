"""Lua scripts inside a MULTI/EXEC pipeline, without redis-py's extra round trip.

A registered `redis.commands.core.AsyncScript` queued on a pipeline makes
`Pipeline.execute` first ask `SCRIPT EXISTS` for every script it holds, one more round trip
per transaction before MULTI is sent. `EVAL` with the script's text needs none: Redis
caches the compiled script by its SHA1 anyway, and a restarted Redis (empty script cache)
can never fail a transaction halfway with NOSCRIPT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def queue_eval(pipe: Any, script: str, keys: Sequence[str],
               args: Sequence[str | int | float]) -> None:
    """Queue `script` on the transaction `pipe` with its keys and arguments."""
    pipe.eval(script, len(keys), *keys, *args)
