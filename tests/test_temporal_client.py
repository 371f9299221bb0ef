"""`core.temporal_client`: the one Temporal connection every process makes.

TLS and API-key settings come from `CRISIS_*` variables exactly as a deployment sets them;
an unreachable server is one line naming the address, the namespace and the reason.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from core.config import Settings
from core.temporal_client import TemporalUnavailable, connect_temporal, tls_config


def env_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(f"CRISIS_{key}", value)
    return Settings()


def pem_pair(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=crisis-worker", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_plaintext_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tls_config(env_settings(monkeypatch)) is False


def test_compose_style_empty_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = env_settings(monkeypatch, TEMPORAL_API_KEY="", TEMPORAL_TLS_CA_FILE="",
                            TEMPORAL_TLS_CERT_FILE="", TEMPORAL_TLS_KEY_FILE="")
    assert settings.temporal_api_key is None and settings.temporal_tls_ca_file is None
    assert tls_config(settings) is False


def test_an_api_key_turns_on_tls_with_the_system_roots(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = env_settings(monkeypatch, TEMPORAL_API_KEY="cloud-key-123",
                            TEMPORAL_ADDRESS="ns.acct.tmprl.cloud:7233")
    assert tls_config(settings) is True
    assert "cloud-key-123" not in repr(settings)  # a SecretStr, never printed


def test_mutual_tls_reads_the_ca_certificate_and_key(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert, key = pem_pair(tmp_path)
    settings = env_settings(monkeypatch, TEMPORAL_TLS_CA_FILE=str(cert),
                            TEMPORAL_TLS_CERT_FILE=str(cert), TEMPORAL_TLS_KEY_FILE=str(key),
                            TEMPORAL_TLS_SERVER_NAME="temporal.internal")
    config = tls_config(settings)
    assert isinstance(config, TLSConfig)
    assert config.client_cert == cert.read_bytes()
    assert config.client_private_key == key.read_bytes()
    assert config.server_root_ca_cert == cert.read_bytes()
    assert config.domain == "temporal.internal"


def test_a_certificate_without_its_key_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert, _ = pem_pair(tmp_path)
    with pytest.raises(TemporalUnavailable, match="set both CRISIS_TEMPORAL_TLS_CERT_FILE"):
        tls_config(env_settings(monkeypatch, TEMPORAL_TLS_CERT_FILE=str(cert)))


def test_a_missing_ca_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TemporalUnavailable, match=f"CA file .* {missing}: No such file"):
        tls_config(env_settings(monkeypatch, TEMPORAL_TLS_CA_FILE=str(missing)))


async def test_an_unreachable_server_is_one_line_without_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = env_settings(monkeypatch, TEMPORAL_ADDRESS="127.0.0.1:9",
                            TEMPORAL_API_KEY="secret-key-xyz", TEMPORAL_TLS="false")
    with pytest.raises(TemporalUnavailable) as caught:
        await connect_temporal(settings)
    message = str(caught.value)
    assert message == ("cannot reach Temporal at 127.0.0.1:9 (namespace default, plaintext): "
                       "Connection refused")
    assert "secret-key-xyz" not in message


@pytest.mark.stack
async def test_connects_to_a_real_server(dev_env: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from temporalio.testing import WorkflowEnvironment

    assert isinstance(dev_env, WorkflowEnvironment)
    settings = env_settings(monkeypatch,
                            TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host)
    client = await connect_temporal(settings)
    assert await client.service_client.check_health()
