"""`crisis api`: serve the HTTP API with uvicorn.

It first checks that Temporal and Redis answer and exits 1 with one line naming the one that
doesn't; `--lazy` skips that, for an API that should start anyway and report 503 on
`/readyz` until both are up.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from core.config import Settings, get_settings
from core.logging import configure_logging


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("api", help="serve the HTTP API")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--lazy", action="store_true",
                        help="start even if Temporal or Redis is down (/readyz says 503)")
    parser.set_defaults(handler=_run)


async def check_dependencies(settings: Settings) -> None:
    """Raise a one-line error (TemporalUnavailable, redis.ConnectionError) if one is down."""
    import redis.asyncio as aioredis

    from core.temporal_client import connect_temporal

    await connect_temporal(settings)
    redis = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=5,
                                    socket_timeout=5)
    try:
        await redis.ping()
    finally:
        await redis.aclose()


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app

    settings = get_settings()
    configure_logging(settings.log_level)
    if not args.lazy:
        asyncio.run(check_dependencies(settings))
    # uvicorn's own access log would duplicate the API's one JSON line per request;
    # log_config=None keeps uvicorn's handlers out, so its lines go through the JSON root
    uvicorn.run(create_app(settings), host=args.host, port=args.port, access_log=False,
                log_level=settings.log_level.lower(), proxy_headers=False, log_config=None)
    return 0
