"""`crisis projection rebuild`: rebuild every Redis read model from Temporal;
`crisis projection reindex`: rebuild the list indexes from the documents Redis holds."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from typing import Any

from core.config import Settings, get_settings
from core.logging import configure_logging


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "projection", help="manage the Redis read models")
    actions = parser.add_subparsers(dest="action", required=True)
    rebuild = actions.add_parser("rebuild", help="rebuild every read model from Temporal")
    rebuild.add_argument("--clear", action="store_true",
                         help="delete the read-model keys first (never idempotency records)")
    rebuild.add_argument("--json", action="store_true",
                         help="print the report as JSON (the default; for symmetry)")
    rebuild.set_defaults(handler=_rebuild)
    reindex = actions.add_parser(
        "reindex", help="rebuild the list indexes from the stored documents (no Temporal): "
                        "after an upgrade that added an index")
    reindex.set_defaults(handler=_reindex)


async def run_rebuild(settings: Settings, *, clear: bool) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from core.temporal_client import connect_temporal
    from readmodel.rebuild import rebuild

    client = await connect_temporal(settings)
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True,
                                    socket_connect_timeout=5)
    try:
        await redis.ping()  # one line naming Redis, before any work
        report = await rebuild(client, redis, task_queue=settings.task_queue, clear=clear)
    finally:
        await redis.aclose()
    return asdict(report)


def _rebuild(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings.log_level)
    report = asyncio.run(run_rebuild(settings, clear=args.clear))
    print(json.dumps(report, indent=2))
    return 1 if report["failed"] else 0


async def run_reindex(settings: Settings) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from readmodel.rebuild import reindex

    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True,
                                    socket_connect_timeout=5)
    try:
        await redis.ping()
        report = await reindex(redis)
    finally:
        await redis.aclose()
    return asdict(report)


def _reindex(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings.log_level)
    report = asyncio.run(run_reindex(settings))
    print(json.dumps(report, indent=2))
    return 1 if report["unreadable"] else 0
