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
from fastapi.responses import FileResponse
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from core.config import Settings, get_settings
from core.tokens import TokenStore
from readmodel.reader import ReadModel

from .deps import Services
from .errors import install_error_handlers
from .idempotency import IdempotencyMiddleware
from .intake import Intake
from .middleware import BodyLimitMiddleware, RequestLogMiddleware
from .playbook_registry import PlaybookRegistry
from .routes import demo, health, incidents, playbooks, reports, review, tasks
from .routing import ROUTING_FILE, RoutingTable

STATIC = Path(__file__).resolve().parent / "static"

DESCRIPTION = """
Crisis-response incidents with parallel quorum approvals and durable escalation.

Authenticate with `Authorization: Bearer <token>` (tokens from `crisis users issue-tokens`;
`make run` prints the demo users' tokens). Every error is `{"error": code, "detail": text}`.
POST endpoints accept an `Idempotency-Key` header: the same key and body return the stored
response, the same key with another body is 422, and a duplicate still in flight is 409.
Request bodies are limited to 256 KiB.
"""


async def build_services(settings: Settings) -> Services:
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                  data_converter=pydantic_data_converter, lazy=True)
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    registry = PlaybookRegistry(settings.playbooks_dir, settings.directory_file)
    registry.directory_snapshot()  # a broken directory should stop the start, loudly
    routing = RoutingTable.load(settings.directory_file.parent / ROUTING_FILE)
    return Services(
        settings=settings, temporal=client, redis=redis, registry=registry,
        tokens=TokenStore(settings.tokens_file), read_model=ReadModel(redis),
        routing=routing, intake=Intake(client, redis, settings, registry, routing))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings)
        app.state.services = services
        try:
            yield
        finally:
            await services.redis.aclose()

    app = FastAPI(title="crisis-engine", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan)
    install_error_handlers(app)
    for module in (health, incidents, review, reports, tasks, playbooks, demo):
        app.include_router(module.router)

    @app.get("/", response_class=FileResponse, summary="The web UI",
             responses={200: {"content": {"text/html": {"example": "<!doctype html>..."}},
                              "description": "A small single-page UI"}},
             tags=["ui"])
    async def web_ui() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    # Added last = runs first: log and request id, then the size limit, then idempotency.
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestLogMiddleware)
    return app
