"""Work that runs beside a block of code: a heartbeat, a lease renewal.

`every(seconds, beat)` calls `beat()` every `seconds` while the `async with` body runs and
stops it, cancelled and awaited, when the body ends however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable


@contextlib.asynccontextmanager
async def every(seconds: float, beat: Callable[[], Awaitable[None] | None], *,
                first_now: bool = True) -> AsyncIterator[None]:
    """Call `beat()` (sync or async) every `seconds` until the body is done: at once and
    then every `seconds`, or (`first_now=False`) first after `seconds`."""
    async def loop() -> None:
        if not first_now:
            await asyncio.sleep(seconds)
        while True:
            result = beat()
            if result is not None:
                await result
            await asyncio.sleep(seconds)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
