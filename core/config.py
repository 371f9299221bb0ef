"""Settings for every process (API, worker, CLI), read from `CRISIS_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRISIS_", extra="ignore")

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "crisis-incidents"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_max_connections: int = 200  # the API's pool; requests wait for a free connection
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
    # Web sessions and signed action links (api/web, core/action_links). `secret_keys` is a
    # JSON list: the first signs, every one verifies (rotate by prepending a new key). Empty:
    # one random key kept in `secret_key_file` (created on first use, mode 0600).
    secret_keys: list[str] = []
    secret_key_file: Path = ROOT / ".data" / "secret.key"
    session_ttl_seconds: int = 12 * 3600
    cookie_secure: bool = False  # set true behind HTTPS
    live_replay_events: int = 1000  # Last-Event-ID resume buffer per stream


@lru_cache
def get_settings() -> Settings:
    return Settings()
