"""Pure ASGI middleware: request ids and access logs, and the request body size limit.

`RequestLogMiddleware` (outermost) gives each request an id (the client's `X-Request-ID`
when it is sane, else a new one), binds `request_id` and the `incident_id` found in the
path with `structlog.contextvars` so every log line of the request carries them, answers
unhandled errors with a JSON 500, and writes one JSON line per request: method, path,
status, duration, user.

An unreachable dependency (Temporal or Redis, see `api.errors.dependency_down`) raised
where FastAPI's handlers can't see it (in the idempotency middleware) is a 503 with
`Retry-After` here, like everywhere else.

`WriteGateMiddleware` refuses incident writes with 503 while Redis is down (see there).

`BodyLimitMiddleware` reads the whole body before the app sees it and answers 413 as soon
as it passes the limit: at once when `Content-Length` says so, and while reading for a
chunked body that never declared its size. A JSON body nested deeper than `max_depth` is
a 422 `BodyTooDeep` before anything parses it (Python's parser would overflow its stack:
a 500), checked by a scan that never recurses, whatever the declared content type. YAML
is bounded by `domain.loader.parse_yaml` too. The buffered body is left in the scope for
the idempotency middleware and replayed to the app.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

import structlog
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.ids import incident_of_task

from .errors import BODY_TOO_DEEP, RETRY_AFTER_SECONDS, dependency_down, error_body
from .idempotency import BODY_SCOPE_KEY

LOG_SCOPE_KEY = "crisis.log"  # a dict routes may add fields to (e.g. the user id)
REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_INCIDENT_IN_PATH = re.compile(r"^/incidents/(inc-[a-z0-9-]{4,80})(?:/|$)")
_TASK_IN_PATH = re.compile(r"^/tasks/(inc-[a-z0-9-]{4,80}\.[^/]+)(?:/|$)")


def incident_id_of_path(path: str) -> str | None:
    if match := _INCIDENT_IN_PATH.match(path):
        return match.group(1)
    if match := _TASK_IN_PATH.match(path):
        return incident_of_task(match.group(1))
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _send_error(send: Send, status: int, code: str, detail: str,
                      extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(error_body(status, code, detail)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, REQUEST_ID_HEADER)
        request_id = given if given and _SANE_REQUEST_ID.match(given) else uuid.uuid4().hex
        fields: dict[str, Any] = {}
        scope[LOG_SCOPE_KEY] = fields
        context: dict[str, Any] = {"request_id": request_id}
        incident_id = incident_id_of_path(scope["path"])
        if incident_id is not None:
            context["incident_id"] = incident_id
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", []),
                                      (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        log = structlog.get_logger("crisis.api")  # per request: honours reconfiguration
        began = time.perf_counter()
        with structlog.contextvars.bound_contextvars(**context):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                down = dependency_down(exc)
                if down is not None:
                    log.warning("dependency_unavailable", method=scope["method"],
                                path=scope["path"], error=down)
                    if not started:
                        await _send_error(send_with_id, 503, "Unavailable", down, extra=[
                            (b"retry-after", str(RETRY_AFTER_SECONDS).encode())])
                    return
                log.exception("unhandled_error", method=scope["method"], path=scope["path"])
                if not started:
                    await _send_error(send_with_id, 500, "InternalError",
                                      "unexpected error; the request id is in the logs")
            finally:
                log.info("request", method=scope["method"], path=scope["path"], status=status,
                         duration_ms=round((time.perf_counter() - began) * 1000, 2), **fields)


class WriteGateMiddleware:
    """Refuse incident writes (POST under `/incidents`, `/reports`, `/tasks`) with 503 while
    Redis is unreachable, before anything is started.

    A write without an Idempotency-Key needs no Redis to reach Temporal, but what follows
    does (the read model, notification records): an incident opened during a Redis outage
    would be half there. The check is one PING per write, on loopback a fraction of a
    millisecond next to the Temporal update the write makes. Writes that arrive while a
    PING is in flight share its answer (single-flight): it is still an answer given after
    they arrived, and a storm of 200 concurrent reports costs one PING, not 200 that queue
    behind each other until they time out and turn into false 503s."""

    WRITES = ("/incidents", "/reports", "/tasks")

    def __init__(self, app: ASGIApp, timeout: float = 1.0) -> None:
        self.app = app
        self.timeout = timeout
        self._ping: asyncio.Future[str | None] | None = None

    async def _redis_down(self, scope: Scope) -> str | None:
        services = getattr(scope["app"].state, "services", None)
        if services is None:
            return None
        if self._ping is None or self._ping.get_loop() is not asyncio.get_running_loop():
            self._ping = asyncio.ensure_future(self._check(services.redis))
            self._ping.add_done_callback(self._clear)
        return await asyncio.shield(self._ping)

    def _clear(self, ping: asyncio.Future[str | None]) -> None:
        if self._ping is ping:
            self._ping = None

    async def _check(self, redis: Any) -> str | None:
        try:
            async with asyncio.timeout(self.timeout):
                await redis.ping()
        except (TimeoutError, OSError, RedisError) as exc:
            return f"Redis: {type(exc).__name__}: {exc}"[:300]
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"].startswith(self.WRITES)):
            down = await self._redis_down(scope)
            if down is not None:
                await _send_error(send, 503, "Unavailable", down, extra=[
                    (b"retry-after", str(RETRY_AFTER_SECONDS).encode())])
                return
        await self.app(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


# A JSON string (with its escapes) or one bracket: everything else is skipped in C.
_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]')
# Every other body is scanned, whatever its declared type: some readers parse JSON without
# looking (the idempotency fingerprint, the demo sink), and YAML's flow style nests with the
# same brackets (block style has none, and `domain.loader` bounds it anyway).
_NOT_JSON_TYPES = (b"multipart/", b"x-www-form-urlencoded")
DEFAULT_MAX_DEPTH = 64


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """True if `body`, read as JSON, nests arrays/objects deeper than `max_depth`.

    Counts brackets outside strings without parsing (so it never recurses); for text that
    is not JSON the answer is only an upper bound, which is all a limit needs."""
    depth = 0
    for match in _JSON_TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return True
        elif token in (b"]", b"}"):
            depth = max(depth - 1, 0)
    return False


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        try:
            body = await self._read(receive)
        except _BodyTooLarge:
            await self._too_large(send)
            return
        content_type = (_header(scope, b"content-type") or "").lower().encode("latin-1")
        if (body and not any(t in content_type for t in _NOT_JSON_TYPES)
                and json_depth_exceeds(body, self.max_depth)):
            await _send_error(send, 422, BODY_TOO_DEEP,
                              f"the JSON body nests deeper than {self.max_depth} levels")
            return
        scope[BODY_SCOPE_KEY] = body
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        await _send_error(send, 413, "PayloadTooLarge",
                          f"request body is larger than {self.max_bytes} bytes",
                          extra=[(b"connection", b"close")])
