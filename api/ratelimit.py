"""Rate limits on intake, per user and per route, backed by Redis (the `limits` library).

One token's flood is stopped; a storm of reports from hundreds of *different* employees
about one post (same `dedup_key`) is never dropped, because each person has their own
budget. Limits use the `limits` notation (`30/minute;300/hour`: every window must allow the
request) from `CRISIS_RATE_LIMIT_REPORTS` / `CRISIS_RATE_LIMIT_INCIDENTS`; a moving window
in Redis makes them hold across every API process. Over the limit: 429 with `Retry-After`
(seconds until the oldest counted request leaves the window).

A Redis outage does not block intake: the limit is a protection, not a record, so the
request goes through and a warning is logged.

Use as a route dependency: `dependencies=[ratelimit.REPORTS]`; `document(app)` adds the 429
response to the OpenAPI of every route that has one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from core.config import Settings
from core.redis_pool import blocking_pool

from .deps import CurrentUser, ServicesDep
from .errors import ApiError, ErrorBody

log = structlog.get_logger("crisis.ratelimit")

KEY_PREFIX = "ce:ratelimit"


@dataclass
class _Limiter:
    redis_url: str
    strategy: MovingWindowRateLimiter


def _limiter(services: Any) -> _Limiter:
    """One limiter per API process (kept on the Services object, built on first use)."""
    settings: Settings = services.settings
    existing: _Limiter | None = getattr(services, "_rate_limiter", None)
    if existing is not None and existing.redis_url == settings.redis_url:
        return existing
    # the API's kind of pool: a flood from one token queues for connections; on redis-py's
    # default pool (100, then "Too many connections") the limiter failed open and let it in
    storage = RedisStorage(f"async+{settings.redis_url}", implementation="redispy",
                           wrap_exceptions=True, key_prefix=KEY_PREFIX,
                           # documented option; the stub types **options too narrowly
                           connection_pool=blocking_pool(  # type: ignore[arg-type]
                               settings, decode_responses=False))
    limiter = _Limiter(settings.redis_url, MovingWindowRateLimiter(storage))
    services._rate_limiter = limiter
    return limiter


def _limits_for(route: str, settings: Settings) -> list[RateLimitItem]:
    spec: str = getattr(settings, f"rate_limit_{route}")
    return list(parse_many(spec))


def limit(route: str) -> Any:
    """A dependency that charges the current user one request on `route`'s budget."""

    async def rate_limit(user: CurrentUser, services: ServicesDep) -> None:
        settings = services.settings
        if not settings.rate_limit_enabled:
            return
        limiter = _limiter(services)
        items = _limits_for(route, settings)
        try:
            for item in items:
                if not await limiter.strategy.hit(item, route, user.id):
                    stats = await limiter.strategy.get_window_stats(item, route, user.id)
                    retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                    log.info("rate_limited", route=route, person_id=user.id,
                             limit=str(item), retry_after=retry_after)
                    raise ApiError(
                        429, f"rate limit for {route} exceeded ({item}); retry in "
                             f"{retry_after} s", "RateLimited",
                        headers={"Retry-After": str(retry_after)})
        except StorageError as exc:
            log.warning("rate_limit_unavailable", route=route, error=type(exc).__name__)

    rate_limit.__name__ = f"rate_limit_{route}"
    return Depends(rate_limit)


REPORTS = limit("reports")
INCIDENTS = limit("incidents")
_ROUTES = {id(REPORTS.dependency): "reports", id(INCIDENTS.dependency): "incidents"}


def _limited_route(route: APIRoute) -> str | None:
    for dependency in route.dependencies:
        name = _ROUTES.get(id(dependency.dependency))
        if name is not None:
            return name
    return None


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also those of included routers (FastAPI may keep them nested)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        nested = getattr(route, "original_router", None)
        if nested is not None:
            yield from _api_routes(nested.routes)


def document(app: FastAPI) -> None:
    """Add the 429 response (with Retry-After) to the OpenAPI of every rate-limited route.

    Routers are module-level and shared by every app in a process, so the text names the
    setting and its default rather than one app's value (idempotent)."""
    for route in _api_routes(app.routes):
        name = _limited_route(route)
        if name is None:
            continue
        setting = f"rate_limit_{name}"
        default = Settings.model_fields[setting].default
        route.responses.setdefault(429, {
            "model": ErrorBody,
            "description": f"Too many requests from this user on this route: the budget is "
                           f"CRISIS_{setting.upper()} (default {default}), per user. Retry "
                           "after the seconds in Retry-After.",
            "headers": {"Retry-After": {"description": "Seconds until a request is allowed",
                                        "schema": {"type": "integer"}}},
            "content": {"application/json": {"example": {
                "error": "RateLimited",
                "detail": f"rate limit for {name} exceeded (30 per 1 minute); retry in 12 s"}}},
        })
