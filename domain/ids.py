"""Identifier formats: incident ids are workflow ids; task ids embed their incident id."""

from __future__ import annotations

import hashlib
import hmac
import re

INCIDENT_ID = re.compile(r"^inc-[a-z0-9-]{4,80}$")
MIN_SECRET_BYTES = 16


def dedup_digest(dedup_key: str, secret: bytes) -> str:
    """A keyed digest of `dedup_key` (HMAC-SHA256 with the server's id secret): without the
    secret nobody can compute it from the key, so ids and Redis keys reveal nothing."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the id secret must have at least {MIN_SECRET_BYTES} bytes")
    return hmac.new(secret, dedup_key.encode(), hashlib.sha256).hexdigest()


def dedup_incident_id(dedup_key: str, epoch: int, secret: bytes) -> str:
    """The workflow id of the `epoch`-th incident opened for `dedup_key`.

    Concurrent openers compute the same id, so Temporal's workflow-id uniqueness (not a
    Redis lock) guarantees one open incident per key. A resolved incident's id is never
    reused: the next one for the key gets `epoch + 1`. The id is keyed with the server
    secret, so it cannot be guessed from the key (every API process must share the secret).
    """
    return f"inc-{dedup_digest(dedup_key, secret)[:20]}-{epoch}"


def task_id(incident_id: str, step_id: str, n: int) -> str:
    return f"{incident_id}.{step_id}.{n}"


def incident_of_task(task_id_: str) -> str:
    return task_id_.split(".", 1)[0]
