"""The server's signing keys (web session cookies, CSRF tokens, signed action links).

`CRISIS_SECRET_KEYS` (a JSON list) wins: the first key signs, every key verifies, so a key is
rotated by prepending a new one and dropping the old one once its links have expired. When
it is empty, one random key is created in `CRISIS_SECRET_KEY_FILE` on first use and shared
by every process that reads the same file (the API and the worker under `make run`).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from core.config import Settings

MIN_KEY_CHARS = 16


def _from_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.encode())
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return key


def signing_keys(settings: Settings) -> list[bytes]:
    """The keys, signing key first; raises ValueError for a key that is too short."""
    keys = [k for k in settings.secret_keys if k]
    if not keys:
        try:
            keys = [_from_file(settings.secret_key_file)]
        except FileExistsError:  # another process created it between our read and create
            keys = [settings.secret_key_file.read_text().strip()]
    for key in keys:
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"every CRISIS_SECRET_KEYS entry needs {MIN_KEY_CHARS}+ characters")
    return [k.encode() for k in keys]
