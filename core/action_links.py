"""Signed one-click action links for task notifications (approve, reject with a reason).

`issue_link(task_id, assignee, content_sha256, action, expires_at)` returns a URL path
`/ui/act/<token>`. The token is a compact JSON claim set and an HMAC-SHA256 over it, made
with the first server key (`core.secrets`); every configured key verifies, so keys rotate.

A link is bound to the task, its assignee and the sha256 of the task's exact text, and it
expires with the task (its deadline). Opening it (GET) shows a confirmation page and never
changes anything, so mail scanners that follow links approve nothing; only the page's POST
decides, and it does so at most once: the first use sets a Redis marker for the link's
nonce (`ce:link:used:<nonce>`), and the decision carries an idempotency key derived from
the nonce, so even a retried POST reaches the workflow as the same request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import redis.asyncio as aioredis

from core.config import Settings
from core.secrets import signing_keys

Action = Literal["approve", "reject"]
ACTIONS: tuple[Action, ...] = ("approve", "reject")
PREFIX = "/ui/act/"
MAX_TOKEN = 1000


class LinkInvalid(Exception):
    """The token was tampered with, is malformed, or was signed by no current key."""


@dataclass(frozen=True)
class LinkClaims:
    task_id: str
    assignee: str
    content_sha256: str
    action: Action
    expires_at: datetime
    nonce: str

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    @property
    def idempotency_key(self) -> str:
        return f"action-link:{self.nonce}"


def content_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, b"action-link:" + payload.encode(), hashlib.sha256).digest())


def used_key(nonce: str) -> str:
    return f"ce:link:used:{nonce}"


class ActionLinks:
    """Issues and checks action links with the server's keys (first signs, all verify)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("action links need at least one key")
        self._keys = keys

    @classmethod
    def from_settings(cls, settings: Settings) -> ActionLinks:
        return cls(signing_keys(settings))

    def issue_link(self, task_id: str, assignee: str, content_sha256: str, action: Action,
                   expires_at: datetime) -> str:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        claims = {"t": task_id, "a": assignee, "h": content_sha256, "x": action,
                  "e": int(expires_at.timestamp()), "n": secrets.token_urlsafe(12)}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{PREFIX}{payload}.{_mac(self._keys[0], payload)}"

    def verify(self, token: str) -> LinkClaims:
        """The claims of an authentic token (expiry is the caller's to check)."""
        payload, _, mac = token.partition(".")
        if not payload or not mac or len(token) > MAX_TOKEN:
            raise LinkInvalid("malformed link")
        if not any(hmac.compare_digest(mac, _mac(key, payload)) for key in self._keys):
            raise LinkInvalid("the link's signature does not match")
        try:
            data = json.loads(_unb64(payload))
            action = data["x"]
            if action not in ACTIONS:
                raise LinkInvalid("unknown action")
            return LinkClaims(task_id=str(data["t"]), assignee=str(data["a"]),
                              content_sha256=str(data["h"]), action=action,
                              expires_at=datetime.fromtimestamp(int(data["e"]), UTC),
                              nonce=str(data["n"]))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise LinkInvalid("malformed link") from exc

    def confirm_token(self, claims: LinkClaims) -> str:
        """The value the confirmation form posts back (only the link's holder can know it)."""
        return _mac(self._keys[0], f"confirm:{claims.nonce}")

    def confirm_ok(self, claims: LinkClaims, supplied: str) -> bool:
        return any(hmac.compare_digest(supplied, _mac(k, f"confirm:{claims.nonce}"))
                   for k in self._keys)


DEFAULT_LIFETIME = timedelta(days=7)  # for a task without a deadline


def task_urls(links: ActionLinks, public_url: str, task_id: str, assignee: str, content: str,
              deadline: datetime | None, now: datetime) -> dict[str, str]:
    """What a task notification links to: its page and the signed approve/reject links.

    For the channels: `{"page": .../ui/tasks/<id>, "approve": .../ui/act/..., "reject": ...}`.
    The links expire with the task's deadline (or after a week if it has none).
    """
    base = public_url.rstrip("/")
    expires = deadline or now + DEFAULT_LIFETIME
    digest = content_sha256(content)
    urls = {"page": f"{base}/ui/tasks/{task_id}"}
    for action in ACTIONS:
        urls[action] = base + links.issue_link(task_id, assignee, digest, action, expires)
    return urls


def notification_links(links: ActionLinks, public_url: str
                       ) -> Callable[[Any], list[tuple[str, str]]]:
    """The notify activity's hook: signed approve / reject links for a task message, bound
    to the assignee, the task and the sha256 of the exact text, expiring with the task. Made
    in the activity, so bearer links never enter workflow history."""
    base = public_url.rstrip("/")
    labels = {"approve": "Approve", "reject": "Reject (with a reason)"}

    def hook(request: Any) -> list[tuple[str, str]]:
        if request.kind != "task" or not request.task_id or not request.content_sha256:
            return []
        expires = request.expires_at or datetime.now(UTC) + DEFAULT_LIFETIME
        return [(labels.get(action, action), base + links.issue_link(
            request.task_id, request.recipient.person_id, request.content_sha256, action,
            expires)) for action in ACTIONS]
    return hook


async def claim_use(redis: aioredis.Redis, claims: LinkClaims, now: datetime) -> bool:
    """Mark the link used; False if it already was. The marker outlives the link."""
    ttl = max(60, int((claims.expires_at - now).total_seconds()) + 86400)
    return bool(await redis.set(used_key(claims.nonce), now.isoformat(), nx=True, ex=ttl))


async def release_use(redis: aioredis.Redis, claims: LinkClaims) -> None:
    """Undo `claim_use` when the decision could not be delivered at all (e.g. 503)."""
    await redis.delete(used_key(claims.nonce))


async def was_used(redis: aioredis.Redis, claims: LinkClaims) -> bool:
    return bool(await redis.exists(used_key(claims.nonce)))
