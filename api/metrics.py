"""Prometheus metrics of the API: `GET /metrics`, and the middleware that fills it.

Requests are labelled by method, route *template* (`/incidents/{incident_id}`, never the
concrete path, so an id never becomes a label) and status:

- `crisis_http_requests_total{method, route, status}`
- `crisis_http_request_duration_seconds{method, route, status}` (histogram)
- `crisis_http_requests_in_progress{method}`

A path no route matches is `route="unmatched"`. The worker exports the domain counters
(activities/metrics.py) and the Temporal SDK's metrics on its own port.
"""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("crisis_http_requests", "HTTP requests answered",
                   ["method", "route", "status"])
LATENCY = Histogram("crisis_http_request_duration_seconds", "time to answer an HTTP request",
                    ["method", "route", "status"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
IN_PROGRESS = Gauge("crisis_http_requests_in_progress", "HTTP requests being answered",
                    ["method"])
UNMATCHED = "unmatched"

router = APIRouter(tags=["health"])


# An operations endpoint for scrapers, not part of the API's contract: kept out of OpenAPI.
@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def route_template(scope: Scope) -> str:
    """The matched route's path template, found again if the router never ran (replays)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", []):
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return str(getattr(candidate, "path", UNMATCHED))
    return UNMATCHED


class MetricsMiddleware:
    """Outermost ASGI middleware: counts and times every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        status = 500
        began = time.perf_counter()

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        IN_PROGRESS.labels(method).inc()
        try:
            await self.app(scope, receive, record_status)
        finally:
            IN_PROGRESS.labels(method).dec()
            labels = (method, route_template(scope), str(status))
            REQUESTS.labels(*labels).inc()
            LATENCY.labels(*labels).observe(time.perf_counter() - began)
