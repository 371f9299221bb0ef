"""API tokens: generated with `secrets`, stored only as sha256 hashes, compared in constant time.

The tokens file (`Settings.tokens_file`) looks like ``{"tokens": {"<sha256 hex>": "<person id>"}}``.
`TokenStore` re-reads it when its modification time or size changes, so tokens issued by
`crisis users issue-tokens` work in a running API without a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

TOKEN_BYTES = 32
MAX_TOKEN_LENGTH = 200


def generate_token() -> str:
    """A fresh random bearer token (43 url-safe characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write_hashes(path: Path, hashes: dict[str, str]) -> None:
    """Write `{"tokens": {hash: person_id}}` atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"tokens": dict(sorted(hashes.items(), key=lambda kv: kv[1]))})


def write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_hashes(path: Path) -> dict[str, str]:
    """The hash -> person id map; an absent file means no tokens."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    tokens = data.get("tokens", {}) if isinstance(data, dict) else {}
    if not isinstance(tokens, dict):
        raise ValueError(f"{path}: `tokens` must be an object of sha256 -> person id")
    return {str(k).lower(): str(v) for k, v in tokens.items()}


@dataclass(frozen=True)
class _Stamp:
    mtime_ns: int
    size: int


class TokenStore:
    """Maps a presented bearer token to a person id, never keeping plain tokens."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._hashes: dict[str, str] = {}
        self._stamp: _Stamp | None = None
        self.reload_if_changed()

    @classmethod
    def from_hashes(cls, path: Path, hashes: dict[str, str]) -> TokenStore:
        write_hashes(path, hashes)
        return cls(path)

    def reload_if_changed(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._hashes, self._stamp = {}, None
            return
        stamp = _Stamp(stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._hashes = read_hashes(self.path)
            self._stamp = stamp

    def __len__(self) -> int:
        return len(self._hashes)

    def person_for(self, token: str) -> str | None:
        """The person id a token belongs to, or None.

        Looked up by the token's SHA-256: what a lookup's timing could reveal is about the
        digest, which says nothing usable about any token (finding a token from a digest
        prefix is a preimage search). One dict lookup, not a scan of every stored hash, so
        a directory of thousands of people costs the same per request as one of ten.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        self.reload_if_changed()
        return self._hashes.get(hash_token(token))
