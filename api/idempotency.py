"""`Idempotency-Key` for POST requests (IETF draft semantics), stored in Redis for 24 h.

- First request with a key: Redis `SET NX` marks it in flight, the request runs, and its
  response (status, content type, body) replaces the mark. 5xx and 429 responses are not
  stored: the mark is dropped so the client may retry.
- Same key, same fingerprint (method, path, query, canonical JSON body): the stored
  response again, with `Idempotent-Replayed: true`.
- Same key, different fingerprint: 422 `IdempotencyKeyReused`.
- Same key while the first request is still in flight: 409 `RequestInFlight`.

The in-flight mark lasts as long as the request runs: it expires after
`idempotency_in_flight_ttl_seconds` (default 15 s) and the running request renews it every
third of that, so a slow request (e.g. while the worker is down) keeps it. Only an API
process that died mid-request lets it lapse; then a retry runs again, and is safe because
the operation itself is keyed: `operation_id` derives the workflow-side ids (report id,
request id, the dedup key of an incident opened without one) from the caller and the key,
so the retry joins what the first attempt started instead of doing it twice.

Keys are scoped per caller (`ce:idem:http:{person}:{key}`); requests without a valid token
are not recorded (they fail with 401 anyway). The body was buffered by the size-limit
middleware, which runs first, so reading it here costs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.background import every

from .auth import bearer_token
from .errors import error_body

HEADER = "idempotency-key"
TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255
BODY_SCOPE_KEY = "crisis.body"  # the buffered request body, set by `api.middleware`


def record_key(person_id: str, key: str) -> str:
    return f"ce:idem:http:{person_id}:{key}"


def operation_id(prefix: str, person_id: str, idempotency_key: str | None,
                 length: int = 40) -> str:
    """An id for the operation a request starts: derived from the caller and their
    Idempotency-Key, so every retry of the request names the same operation (the workflow
    deduplicates by it); fresh without a key."""
    if idempotency_key is None:
        return f"{prefix}-{uuid.uuid4().hex}"
    digest = hashlib.sha256(f"{person_id}\n{idempotency_key}".encode()).hexdigest()
    return f"{prefix}-{digest[:length]}"


# Renew / store / drop the mark only while it is still ours (`owner`).
_RENEW = """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw)['owner'] == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw)['owner'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@contextlib.asynccontextmanager
async def _renewing(redis: aioredis.Redis, rkey: str, owner: str,
                    ttl_seconds: float) -> AsyncIterator[None]:
    """Keep the in-flight mark alive while the body runs."""
    renew = redis.register_script(_RENEW)

    async def beat() -> None:
        with contextlib.suppress(Exception):  # a missed renewal is retried next beat
            await renew(keys=[rkey], args=[owner, int(ttl_seconds * 1000)])

    async with every(ttl_seconds / 3, beat, first_now=False):
        yield


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isprintable() and ":" not in key


@dataclass
class _Captured:
    status: int = 500
    content_type: str = "application/json"
    chunks: list[bytes] = field(default_factory=list)


async def _send_json(send: Send, status: int, payload: dict[str, Any],
                     extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class IdempotencyMiddleware:
    """ASGI middleware; expects `scope[BODY_SCOPE_KEY]` set by the body-limit middleware."""

    def __init__(self, app: ASGIApp, exempt_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.exempt_prefixes = exempt_prefixes  # paths that handle the header themselves

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"].startswith(self.exempt_prefixes)):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get(HEADER)
        services = getattr(scope["app"].state, "services", None)
        token = bearer_token(headers.get("authorization"))
        person_id = None
        if services is not None and token is not None and key is not None:
            person_id = services.tokens.person_for(token)
        if services is None or key is None or person_id is None:
            await self.app(scope, receive, send)
            return
        if not valid_key(key):
            await _send_json(send, 422, error_body(
                422, "ValidationError",
                f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters without ':'"))
            return
        redis: aioredis.Redis = services.redis
        body: bytes = scope.get(BODY_SCOPE_KEY, b"")
        fp = fingerprint(scope["method"], scope["path"], scope.get("query_string", b""), body)
        rkey = record_key(person_id, key)
        owner = uuid.uuid4().hex
        ttl = float(services.settings.idempotency_in_flight_ttl_seconds)
        pending = json.dumps({"state": "in_flight", "fp": fp, "owner": owner})
        while not await redis.set(rkey, pending, nx=True, px=int(ttl * 1000)):
            raw = await redis.get(rkey)
            if raw is None:
                continue  # expired between SET and GET: try to take it again
            await self._answer_existing(json.loads(raw), fp, send)
            return
        captured = _Captured()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured.status = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        captured.content_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                captured.chunks.append(message.get("body", b""))
            await send(message)

        stored = False
        try:
            async with _renewing(redis, rkey, owner, ttl):
                await self.app(scope, receive, capture)
            if captured.status < 500 and captured.status != 429:  # 429: retry after
                record = {"state": "done", "fp": fp, "status": captured.status,
                          "content_type": captured.content_type,
                          "body": b"".join(captured.chunks).decode("utf-8", "replace")}
                await redis.set(rkey, json.dumps(record), ex=TTL_SECONDS)
                stored = True
        finally:
            if not stored:
                await redis.register_script(_RELEASE)(keys=[rkey], args=[owner])

    @staticmethod
    async def _answer_existing(record: dict[str, Any], fp: str, send: Send) -> None:
        if record.get("fp") != fp:
            await _send_json(send, 422, error_body(
                422, "IdempotencyKeyReused",
                "this Idempotency-Key was used for a different request"))
            return
        if record.get("state") != "done":
            await _send_json(send, 409, error_body(
                409, "RequestInFlight",
                "a request with this Idempotency-Key is still being processed; retry later"),
                extra=[(b"retry-after", b"1")])
            return
        body = str(record["body"]).encode()
        await send({"type": "http.response.start", "status": int(record["status"]), "headers": [
            (b"content-type", str(record["content_type"]).encode("latin-1")),
            (b"content-length", str(len(body)).encode()),
            (b"idempotent-replayed", b"true"),
        ]})
        await send({"type": "http.response.body", "body": body})
