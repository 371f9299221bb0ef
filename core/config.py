"""Settings for every process (API, worker, CLI), read from `CRISIS_*` environment variables."""

from __future__ import annotations

import json
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.secret_file import read_or_create
from domain.policy_versions import ChangePolicy

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRISIS_", extra="ignore")

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "crisis-incidents"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_max_connections: int = 200  # each API pool (read model, rate limits); callers queue
    playbooks_dir: Path = ROOT / "playbooks"
    directory_file: Path = ROOT / "config" / "directory.yaml"
    tokens_file: Path = ROOT / ".data" / "tokens.json"  # sha256 hashes only
    public_url: str = "http://127.0.0.1:8000"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_sender: str = "crisis-engine@localhost"
    # SMTP relay security: "none", "starttls" (upgrade on 587) or "tls" (implicit, 465)
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: Path | None = None  # trust this CA bundle instead of the system's
    # Apprise config (YAML or TEXT, with tags) holding the secret-bearing service URLs
    apprise_config: Path | None = None
    # Rate limits on intake, per user and per route ("limits" notation, e.g. "30/minute")
    rate_limit_enabled: bool = True
    rate_limit_reports: str = "30/minute;300/hour"
    rate_limit_incidents: str = "30/minute;300/hour"
    http_timeout_seconds: float = 10.0
    max_body_bytes: int = 256 * 1024
    log_level: str = "INFO"
    continue_as_new_after_events: int = 8000
    # Workflows the worker keeps in memory (Temporal's sticky cache). Each cached open
    # incident costs worker RSS (see `make bench`, row "worker RSS"); an incident that is
    # not cached is replayed from its history on its next event (a decide then costs a
    # replay, also measured there). Memory ~ base + this x per-incident RSS.
    worker_max_cached_workflows: int = 1500
    # the SDK walks every workflow activation's payloads for a codec this deployment does
    # not have; the worker skips those walks (`worker.payload_walks`) unless this is set
    worker_keep_sdk_payload_walks: bool = False
    # reviewed policy (issue 12): the version store's workflow id ("" = derived from the task
    # queue), who approves a change (JSON, e.g. {"approvals": 2, "access": ["admin"]}), and
    # how often an API process re-reads the active versions
    policy_catalog_id: str = ""
    change_policy: ChangePolicy = ChangePolicy()
    policy_refresh_seconds: float = 1.0
    # Temporal connection security (Temporal Cloud or any TLS cluster; core/temporal_client.py).
    # TLS is on when `temporal_tls` is true, or, left unset, when a CA, a client certificate
    # or an API key is given.
    temporal_tls: bool | None = None
    temporal_tls_ca_file: Path | None = None  # PEM; default: the system's roots
    temporal_tls_cert_file: Path | None = None  # PEM client certificate (mTLS)
    temporal_tls_key_file: Path | None = None  # PEM private key of that certificate
    temporal_tls_server_name: str | None = None  # override the name checked in the server cert
    temporal_api_key: SecretStr | None = None  # Temporal Cloud API key (sent as a bearer)
    temporal_connect_timeout_seconds: float = 10.0
    # Observability: the worker's Temporal SDK metrics (Prometheus text on their own port,
    # 0 = off) and the OpenTelemetry OTLP endpoint for traces (unset = tracing off).
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 0
    otlp_endpoint: str | None = None

    @field_validator("temporal_tls", "temporal_tls_ca_file", "temporal_tls_cert_file",
                     "temporal_tls_key_file", "temporal_tls_server_name", "temporal_api_key",
                     "otlp_endpoint", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """`CRISIS_X=` (as compose passes an unset `${X:-}`) means "not set", not Path(".")."""
        return None if isinstance(value, str) and not value.strip() else value
    # `/demo/sink/{name}` exists only in demo mode (`crisis stack run`, `make run`): it takes
    # anything from anyone, which is only right on a developer's machine
    demo_mode: bool = False
    max_json_depth: int = 64  # request bodies nested deeper are a 422
    # fail fast (503 + Retry-After) when a dependency is down, instead of hanging
    redis_socket_timeout_seconds: float = 2.0
    temporal_retry_budget_seconds: float = 3.0
    # Keys incident ids derived from a dedup_key (HMAC): every API process must share it.
    # Unset: read from (or, the first time, generated into) `id_secret_file`.
    id_secret: SecretStr | None = None
    id_secret_file: Path | None = None  # default: `id-secret` next to `tokens_file`
    # How long an Idempotency-Key's in-flight marker lives without renewal; a running
    # request renews it every third of this, so only a crashed API lets it lapse; after a
    # crash a retry with the same key gets 409 for at most this long.
    idempotency_in_flight_ttl_seconds: float = Field(default=15.0, gt=0, le=3600.0)

    def id_secret_bytes(self) -> bytes:
        """The id secret: `CRISIS_ID_SECRET`, else the secret file (created 0600 if absent)."""
        if self.id_secret is not None:
            return self.id_secret.get_secret_value().encode()
        path = self.id_secret_file or self.tokens_file.parent / "id-secret"
        return read_or_create(path, lambda: secrets.token_hex(32)).encode()
    # Web sessions and signed action links (api/web, core/action_links). `secret_keys` is a
    # JSON list: the first signs, every one verifies (rotate by prepending a new key). Empty:
    # one random key kept in `secret_key_file` (created on first use, mode 0600).
    secret_keys: list[str] = []
    secret_key_file: Path = ROOT / ".data" / "secret.key"
    # Signed actors (core/actor_signing.py): a JSON object {"<key id>": "<secret>"} shared by
    # the API and the worker; the first key signs, every key verifies (rotate: add the new
    # key second everywhere, move it first on the APIs, then drop the old one). Empty: one
    # random key in `actor_key_file` (default `actor.key` next to `tokens_file`, mode 0600).
    actor_keys: Annotated[dict[str, SecretStr], NoDecode] = {}
    actor_key_file: Path | None = None

    @field_validator("actor_keys", mode="before")
    @classmethod
    def _actor_keys_json(cls, value: Any) -> Any:
        """`CRISIS_ACTOR_KEYS` is JSON; empty (compose's unset `${X:-}`) means no keys."""
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("actor_key_file", mode="before")
    @classmethod
    def _empty_is_default_file(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value
    session_ttl_seconds: int = 12 * 3600
    cookie_secure: bool = False  # set true behind HTTPS
    live_replay_events: int = 1000  # Last-Event-ID resume buffer per stream


@lru_cache
def get_settings() -> Settings:
    return Settings()
