"""How an API process connects to Redis: one rule for the read model and the rate limiter.

A blocking pool: a burst of requests (or hundreds of live-event streams) waits for a
connection instead of failing with "Too many connections" (redis-py's default pool stops at
100). Socket timeouts make a dead Redis a fast 503; a pooled connection that died with a
Redis restart is retried on a fresh one.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.config import Settings

POOL_WAIT_SECONDS = 10  # a request waits this long for a free connection, then errors


def blocking_pool(settings: Settings, *, decode_responses: bool = True
                  ) -> aioredis.BlockingConnectionPool:
    """Up to `CRISIS_REDIS_MAX_CONNECTIONS` connections; callers beyond that queue."""
    return aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, decode_responses=decode_responses,
        max_connections=settings.redis_max_connections, timeout=POOL_WAIT_SECONDS,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_socket_timeout_seconds,
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError])
