"""The FastAPI application: `create_app(settings)` wires routes, errors, middleware, lifespan.

The lifespan connects one Temporal client (with the pydantic data converter, lazily, so the
API starts, and `/readyz` says 503, while Temporal is still coming up) and one Redis client,
and keeps them with the playbook registry and the token store in `app.state.services`.
Both clients fail fast: Temporal calls give up retrying an unreachable server after
`temporal_retry_budget_seconds`, Redis calls time out after `redis_socket_timeout_seconds`,
so a request answers 503 with `Retry-After` within a few seconds when either is down.

`/demo/sink/*` is mounted only in demo mode (`Settings.demo_mode`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from temporalio.service import RetryConfig

from core.action_links import ActionLinks
from core.actor_signing import ActorSigner, actor_keyring
from core.config import Settings, get_settings
from core.policy_store import PolicyStore
from core.redis_pool import blocking_pool
from core.secrets import signing_keys
from core.temporal_client import connect_temporal
from core.tokens import TokenStore
from core.tracing import instrument_app, tracing_interceptors
from readmodel.events import EventHub
from readmodel.reader import ReadModel

from . import ratelimit
from .deps import Services
from .errors import install_error_handlers
from .idempotency import IdempotencyMiddleware
from .intake import Intake
from .metrics import MetricsMiddleware
from .metrics import router as metrics_router
from .middleware import BodyLimitMiddleware, RequestLogMiddleware, WriteGateMiddleware
from .openapi import install_openapi
from .playbook_registry import PlaybookRegistry
from .routes import (
    actions,
    demo,
    directory,
    drafts,
    health,
    incidents,
    leadership,
    live,
    playbooks,
    reports,
    review,
    tasks,
)
from .routing import ROUTING_FILE, RoutingTable
from .web import act as web_act
from .web import away as web_away
from .web import docs as web_docs
from .web import pages as web_pages
from .web import rosters as web_rosters
from .web.sessions import SessionStore

WEB_STATIC = Path(__file__).resolve().parent / "web" / "static"

DESCRIPTION = """
Crisis-response incidents with parallel quorum approvals and durable escalation.

Authenticate with `Authorization: Bearer <token>` (tokens from `crisis users issue-tokens`;
`make run` prints the demo users' tokens). The web app at `/ui` signs in with the same
token and keeps an HttpOnly session cookie instead (state changes then need the page's
CSRF token in `X-CSRF-Token`). Every error is `{"error": code, "detail": text}`.
POST endpoints accept an `Idempotency-Key` header: the same key and body return the stored
response, the same key with another body is 422, and a duplicate still in flight is 409.
Request bodies are limited to 256 KiB and to 64 levels of nesting (422 `BodyTooDeep`).
A method a path does not have is 405 with an `Allow` header listing the ones it has.
When Temporal or Redis is unreachable every route that needs it answers 503 `Unavailable`
with `Retry-After`; `GET /readyz` says which one is down.
"""


async def build_services(settings: Settings) -> Services:
    budget = settings.temporal_retry_budget_seconds
    # every command the API sends is signed (actor, roles, request id): core/actor_signing
    signer = ActorSigner(actor_keyring(settings))
    client = await connect_temporal(
        settings, lazy=True,
        interceptors=[*tracing_interceptors(settings, "crisis-api"), signer],
        retry_config=RetryConfig(max_elapsed_time_millis=int(budget * 1000), max_retries=6,
                                 max_interval_millis=1000))
    redis = aioredis.Redis.from_pool(blocking_pool(settings))  # bursts queue, never fail
    registry = PlaybookRegistry(settings.playbooks_dir, settings.directory_file,
                                store=PolicyStore(client, settings),
                                refresh_seconds=settings.policy_refresh_seconds)
    registry.directory_snapshot()  # a broken directory should stop the start, loudly
    signer.roles_of = registry.access_of
    routing = RoutingTable.load(settings.directory_file.parent / ROUTING_FILE)
    keys = signing_keys(settings)
    hub = EventHub(redis)
    return Services(
        settings=settings, temporal=client, redis=redis, registry=registry,
        tokens=TokenStore(settings.tokens_file), read_model=ReadModel(redis, hub),
        routing=routing, intake=Intake(client, redis, settings, registry, routing),
        sessions=SessionStore(redis, keys, settings.session_ttl_seconds),
        hub=hub, links=ActionLinks(keys))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings)
        app.state.services = services
        await services.registry.start()  # the active playbook versions, from the store
        await services.hub.start(wait=0)  # live events, and commands' read-your-writes
        await services.intake.time_off.start()  # new incidents never wait to read time off
        try:
            yield
        finally:
            await services.intake.time_off.stop()
            await services.registry.stop()
            await services.hub.stop()
            await services.redis.aclose()

    app = FastAPI(title="crisis-engine", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    install_openapi(app)
    for module in (health, incidents, drafts, review, leadership, reports, tasks, playbooks,
                   directory, live, actions):
        app.include_router(module.router)
    if settings.demo_mode:
        app.include_router(demo.router)
    app.include_router(metrics_router)
    web_docs.install(app)  # /docs and /redoc from vendored assets, offline
    web_pages.install(app)  # the web app under /ui (and / redirects there)
    app.include_router(web_act.router)  # signed action links: /ui/act/<token>
    app.include_router(web_away.router)  # a person's own time away: /ui/away
    app.include_router(web_rosters.router)  # on call now, roster overrides: /ui/rosters
    app.mount("/static", StaticFiles(directory=WEB_STATIC), name="static")

    ratelimit.document(app)  # 429 + Retry-After in the OpenAPI of limited routes

    # Added last = runs first: log and request id, the size limit, the Redis gate for
    # writes, then idempotency.
    app.add_middleware(IdempotencyMiddleware, exempt_prefixes=(demo.router.prefix + "/",))
    app.add_middleware(WriteGateMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       max_depth=settings.max_json_depth)
    app.add_middleware(RequestLogMiddleware)
    app.add_middleware(MetricsMiddleware)  # outermost: counts every answer, 413s included
    instrument_app(app, settings)  # OpenTelemetry server spans, when CRISIS_OTLP_ENDPOINT is set
    return app
