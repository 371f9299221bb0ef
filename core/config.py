"""Settings for every process (API, worker, CLI), read from `CRISIS_*` environment variables."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRISIS_", extra="ignore")

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "crisis-incidents"
    redis_url: str = "redis://127.0.0.1:6379/0"
    playbooks_dir: Path = ROOT / "playbooks"
    directory_file: Path = ROOT / "config" / "directory.yaml"
    tokens_file: Path = ROOT / ".data" / "tokens.json"  # sha256 hashes only
    public_url: str = "http://127.0.0.1:8000"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_sender: str = "crisis-engine@localhost"
    http_timeout_seconds: float = 10.0
    max_body_bytes: int = 256 * 1024
    log_level: str = "INFO"
    continue_as_new_after_events: int = 8000
    # Keys incident ids derived from a dedup_key (HMAC): every API process must share it.
    # Unset: read from (or, the first time, generated into) `id_secret_file`.
    id_secret: SecretStr | None = None
    id_secret_file: Path | None = None  # default: `id-secret` next to `tokens_file`
    # How long an Idempotency-Key's in-flight marker lives without renewal; a running
    # request renews it every third of this, so only a crashed API lets it lapse.
    idempotency_in_flight_ttl_seconds: float = 120.0

    def id_secret_bytes(self) -> bytes:
        """The id secret: `CRISIS_ID_SECRET`, else the secret file (created 0600 if absent)."""
        if self.id_secret is not None:
            return self.id_secret.get_secret_value().encode()
        path = self.id_secret_file or self.tokens_file.parent / "id-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
            try:  # link(2) is atomic: of two processes starting at once, one secret wins
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        return path.read_text().strip().encode()


@lru_cache
def get_settings() -> Settings:
    return Settings()
