"""Liveness (`/healthz`, no dependencies) and readiness (`/readyz`: Temporal and Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..deps import ServicesDep
from ..schemas import Health, Readiness

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 2.0


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers",
            operation_id="getHealth")
async def healthz() -> Health:
    return Health(status="ok")


async def _check(probe: Awaitable[Any]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            ok = await probe
    except TimeoutError:
        return "error: timed out"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok" if ok else "error: unhealthy"


@router.get(
    "/readyz", response_model=Readiness,
    summary="Readiness: Temporal and Redis both answer", operation_id="getReadiness",
    responses={503: {"model": Readiness, "description": "Which dependency failed"}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    temporal, redis = await asyncio.gather(
        _check(services.temporal.service_client.check_health(
            timeout=timedelta(seconds=CHECK_TIMEOUT_SECONDS))),
        _check(services.redis.ping()),
    )
    checks = {"temporal": temporal, "redis": redis}
    ready = all(v == "ok" for v in checks.values())
    body = Readiness(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
