"""Browser sessions: a signed, HttpOnly, SameSite cookie naming a session kept in Redis.

Signing in (`POST /ui/login` with a token, or a future OIDC callback) calls
`SessionStore.start(person_id)`; the cookie holds only a random session id and its HMAC
(server keys from `core.secrets`), never the token. Redis keeps `ce:session:<sha256(id)>`
with the person and the session's CSRF token, expiring after `session_ttl_seconds`.

CSRF: every state-changing request that authenticates with the cookie must carry the
session's CSRF token, in the `X-CSRF-Token` header (htmx sends it from the page's
`<meta name="csrf-token">`) or a `csrf_token` form field. Bearer-token API calls are
untouched. The cookie is `SameSite=Lax` so a link in an e-mail opens the page signed in,
while cross-site POSTs carry no cookie at all.

OIDC seam: a login method only has to establish *which directory person* signed in and
then call `start()`. An Authlib integration would register an OAuth client, redirect in
`GET /ui/login/oidc`, and in its callback map the ID token's `email` (or `sub`) claim to a
directory person before calling `start()`; nothing else in the app changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis

COOKIE = "ce_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _key(session_id: str) -> str:
    return "ce:session:" + hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    person_id: str
    csrf: str


class SessionStore:
    def __init__(self, redis: aioredis.Redis, keys: list[bytes], ttl_seconds: int) -> None:
        self._redis = redis
        self._keys = keys
        self.ttl_seconds = ttl_seconds

    def _mac(self, key: bytes, session_id: str) -> str:
        return _b64(hmac.new(key, b"session:" + session_id.encode(), hashlib.sha256).digest())

    def _unsign(self, cookie: str) -> str | None:
        session_id, _, mac = cookie.partition(".")
        if not session_id or not mac or len(cookie) > 200:
            return None
        if any(hmac.compare_digest(mac, self._mac(k, session_id)) for k in self._keys):
            return session_id
        return None

    async def start(self, person_id: str) -> tuple[str, Session]:
        """A new session; returns (cookie value, session)."""
        session_id = secrets.token_urlsafe(32)
        session = Session(person_id=person_id, csrf=secrets.token_urlsafe(32))
        await self._redis.set(_key(session_id), json.dumps(
            {"person_id": session.person_id, "csrf": session.csrf}), ex=self.ttl_seconds)
        return f"{session_id}.{self._mac(self._keys[0], session_id)}", session

    async def get(self, cookie: str | None) -> Session | None:
        session_id = self._unsign(cookie) if cookie else None
        if session_id is None:
            return None
        raw = await self._redis.get(_key(session_id))
        if raw is None:
            return None
        data = json.loads(raw)
        return Session(person_id=str(data["person_id"]), csrf=str(data["csrf"]))

    async def end(self, cookie: str | None) -> None:
        session_id = self._unsign(cookie) if cookie else None
        if session_id is not None:
            await self._redis.delete(_key(session_id))


def csrf_ok(session: Session, supplied: str | None) -> bool:
    return bool(supplied) and hmac.compare_digest(session.csrf, str(supplied))
