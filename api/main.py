"""The FastAPI application: `create_app(settings)` wires routes, errors, middleware, lifespan.

The lifespan connects one Temporal client (with the pydantic data converter, lazily, so the
API starts, and `/readyz` says 503, while Temporal is still coming up) and one Redis client,
and keeps them with the playbook registry and the token store in `app.state.services`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from core.action_links import ActionLinks
from core.config import Settings, get_settings
from core.secrets import signing_keys
from core.tokens import TokenStore
from readmodel.events import EventHub
from readmodel.reader import ReadModel

from .deps import Services
from .errors import install_error_handlers
from .idempotency import IdempotencyMiddleware
from .intake import Intake
from .middleware import BodyLimitMiddleware, RequestLogMiddleware
from .playbook_registry import PlaybookRegistry
from .routes import demo, health, incidents, leadership, live, playbooks, reports, review, tasks
from .routing import ROUTING_FILE, RoutingTable
from .web import act as web_act
from .web import docs as web_docs
from .web import pages as web_pages
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
Request bodies are limited to 256 KiB.
"""


async def build_services(settings: Settings) -> Services:
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                  data_converter=pydantic_data_converter, lazy=True)
    # A blocking pool: a burst of requests (or hundreds of live-event streams) waits for a
    # connection instead of failing with "Too many connections" (redis-py's default, 100).
    redis = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, decode_responses=True, max_connections=settings.redis_max_connections,
        timeout=10))
    registry = PlaybookRegistry(settings.playbooks_dir, settings.directory_file)
    registry.directory_snapshot()  # a broken directory should stop the start, loudly
    keys = signing_keys(settings)
    return Services(
        settings=settings, temporal=client, redis=redis, registry=registry,
        tokens=TokenStore(settings.tokens_file), read_model=ReadModel(redis),
        routing=RoutingTable.load(settings.directory_file.parent / ROUTING_FILE),
        intake=Intake(client, redis, settings.task_queue),
        sessions=SessionStore(redis, keys, settings.session_ttl_seconds),
        hub=EventHub(redis), links=ActionLinks(keys))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings)
        app.state.services = services
        try:
            yield
        finally:
            await services.hub.stop()
            await services.redis.aclose()

    app = FastAPI(title="crisis-engine", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    for module in (health, incidents, review, leadership, reports, tasks, playbooks, demo, live):
        app.include_router(module.router)
    web_docs.install(app)  # /docs and /redoc from vendored assets, offline
    web_pages.install(app)  # the web app under /ui (and / redirects there)
    app.include_router(web_act.router)  # signed action links: /ui/act/<token>
    app.mount("/static", StaticFiles(directory=WEB_STATIC), name="static")

    # Added last = runs first: log and request id, then the size limit, then idempotency.
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestLogMiddleware)
    return app
