"""The one way every process connects to Temporal: address, namespace, TLS and API key.

The API, the worker, `crisis projection rebuild`, the worker health check and the dev stack
all call `connect_temporal(settings)`, so a TLS or Temporal Cloud setting made once through
`CRISIS_TEMPORAL_*` applies everywhere. A server that cannot be reached raises
`TemporalUnavailable` with one line saying where and why, never a traceback.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client, Interceptor
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime
from temporalio.service import RetryConfig, TLSConfig

from core.config import Settings
from core.payloads import DATA_CONVERTER


class TemporalUnavailable(Exception):
    """Temporal cannot be reached (or the connection settings are wrong); one line."""


def _read_pem(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TemporalUnavailable(f"cannot read the Temporal {what} {path}: "
                                  f"{exc.strerror or exc}") from None


def tls_config(settings: Settings) -> TLSConfig | bool:
    """What `Client.connect(tls=...)` gets: False (plain), True (system roots) or a TLSConfig."""
    ca = _read_pem(settings.temporal_tls_ca_file, "CA file (CRISIS_TEMPORAL_TLS_CA_FILE)")
    cert = _read_pem(settings.temporal_tls_cert_file,
                     "client certificate (CRISIS_TEMPORAL_TLS_CERT_FILE)")
    key = _read_pem(settings.temporal_tls_key_file,
                    "client key (CRISIS_TEMPORAL_TLS_KEY_FILE)")
    if (cert is None) != (key is None):
        raise TemporalUnavailable("set both CRISIS_TEMPORAL_TLS_CERT_FILE and "
                                  "CRISIS_TEMPORAL_TLS_KEY_FILE for mutual TLS, or neither")
    wanted = settings.temporal_tls
    if wanted is None:
        wanted = bool(ca or cert or settings.temporal_api_key)
    if not wanted:
        if ca or cert:
            raise TemporalUnavailable("CRISIS_TEMPORAL_TLS is false but TLS files are set")
        return False
    if not (ca or cert or settings.temporal_tls_server_name):
        return True
    return TLSConfig(server_root_ca_cert=ca, client_cert=cert, client_private_key=key,
                     domain=settings.temporal_tls_server_name)


def describe(settings: Settings) -> str:
    """Where we connect, for messages (never the API key)."""
    secure = "TLS" if tls_config(settings) else "plaintext"
    return f"{settings.temporal_address} (namespace {settings.temporal_namespace}, {secure})"


def _short_reason(text: str) -> str:
    """The human part of a core-SDK connect error ("Connection refused", a DNS failure)."""
    for pattern in (r'message: "([^"]+)"', r'error: "([^"]+)"', r'ConnectError\("([^"]+)"'):
        if match := re.search(pattern, text):
            return match.group(1)
    return " ".join(text.split())


async def connect_temporal(
    settings: Settings, *, lazy: bool = False, runtime: Runtime | None = None,
    interceptors: Sequence[Interceptor] = (),
    data_converter: DataConverter = DATA_CONVERTER,
    retry_config: RetryConfig | None = None,
) -> Client:
    """A client for `settings`; raises `TemporalUnavailable` with a one-line reason.

    `retry_config` bounds how long one call retries an unreachable server (the API passes a
    short budget so a request answers 503 within seconds instead of hanging)."""
    tls = tls_config(settings)
    api_key = (settings.temporal_api_key.get_secret_value()
               if settings.temporal_api_key is not None else None)
    timeout = settings.temporal_connect_timeout_seconds
    try:
        return await asyncio.wait_for(Client.connect(
            settings.temporal_address, namespace=settings.temporal_namespace, api_key=api_key,
            tls=tls, data_converter=data_converter, interceptors=list(interceptors),
            runtime=runtime, lazy=lazy, connect_timeout=timedelta(seconds=timeout),
            retry_config=retry_config),
            timeout=timeout + 5)
    except TimeoutError:
        raise TemporalUnavailable(f"cannot reach Temporal at {describe(settings)}: no answer "
                                  f"within {timeout:.0f}s") from None
    except RuntimeError as exc:  # the core SDK reports connect failures as RuntimeError
        reason = _short_reason(str(exc))
        if api_key:
            reason = reason.replace(api_key, "***")
        raise TemporalUnavailable(f"cannot reach Temporal at {describe(settings)}: "
                                  f"{reason}") from None
