"""The server's signing keys (web session cookies, CSRF tokens, signed action links).

`CRISIS_SECRET_KEYS` (a JSON list) wins: the first key signs, every key verifies, so a key is
rotated by prepending a new one and dropping the old one once its links have expired. When
it is empty, one random key is created in `CRISIS_SECRET_KEY_FILE` on first use and shared
by every process that reads the same file (the API and the worker under `make run`).
"""

from __future__ import annotations

from core.config import Settings
from core.secret_file import read_or_create

MIN_KEY_CHARS = 16


def signing_keys(settings: Settings) -> list[bytes]:
    """The keys, signing key first; raises ValueError for a key that is too short."""
    keys = [k for k in settings.secret_keys if k]
    if not keys:
        try:
            keys = [read_or_create(settings.secret_key_file)]
        except FileExistsError:  # another process created it between our read and create
            keys = [settings.secret_key_file.read_text().strip()]
    for key in keys:
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"every CRISIS_SECRET_KEYS entry needs {MIN_KEY_CHARS}+ characters")
    return [k.encode() for k in keys]
