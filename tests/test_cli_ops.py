"""The operator's CLI: `--version`, and one line plus exit 1 whenever a server is down.

Each command runs as a real subprocess, the way a person (or a container runtime) starts
it, against a port where nothing listens, or against a real Temporal with Redis down.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from cli.main import build_parser
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVER_COMMANDS = [["worker"], ["api"], ["projection", "rebuild"]]
CLIENT_COMMANDS = [["incidents", "list"], ["incidents", "show", "inc-0123456789abcdef0123-1"],
                   ["incidents", "open", "--title", "t", "--summary", "s", "--severity", "high",
                    "--playbook", "viral-complaint"],
                   ["incidents", "resolve", "inc-0123456789abcdef0123-1", "--summary", "s"],
                   ["tasks", "list"], ["tasks", "decide", "inc-0123456789abcdef0123-1.x.1",
                                       "approve"],
                   ["tasks", "delegate", "inc-0123456789abcdef0123-1.x.1", "--to", "dana"]]


def crisis(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRISIS_")}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=90,
                          check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crisis: error: "), lines
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_version() -> None:
    result = crisis("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"crisis-engine {version('crisis-engine')}"


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=" ".join)
def test_server_commands_name_an_unreachable_temporal(command: list[str]) -> None:
    port = free_port()
    result = crisis(*command, CRISIS_TEMPORAL_ADDRESS=f"127.0.0.1:{port}",
                    CRISIS_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert_one_line_error(result, f"cannot reach Temporal at 127.0.0.1:{port}",
                          "Connection refused")


@pytest.mark.stack
@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=" ".join)
def test_server_commands_name_an_unreachable_redis(
        command: list[str], dev_env: WorkflowEnvironment) -> None:
    port = free_port()
    result = crisis(*command,
                    CRISIS_TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host,
                    CRISIS_REDIS_URL=f"redis://:hunter2@127.0.0.1:{port}/0")
    assert_one_line_error(result, f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0")
    assert "hunter2" not in result.stderr


def test_worker_metrics_port_in_use_is_one_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = crisis("worker", "--metrics-port", str(port))
    assert_one_line_error(result, f"cannot serve worker metrics on 127.0.0.1:{port}",
                          "Address already in use")


@pytest.mark.parametrize("command", CLIENT_COMMANDS, ids=" ".join)
def test_client_commands_name_an_unreachable_api(command: list[str]) -> None:
    port = free_port()
    result = crisis(*command, CRISIS_API_URL=f"http://127.0.0.1:{port}",
                    CRISIS_TOKEN="some-token")
    assert_one_line_error(result, f"cannot reach the API at http://127.0.0.1:{port}")
    assert "some-token" not in result.stderr


def test_client_commands_need_a_token_from_the_environment() -> None:
    result = crisis("incidents", "list", CRISIS_API_URL=f"http://127.0.0.1:{free_port()}")
    assert_one_line_error(result, "set CRISIS_TOKEN")


def _subcommand(path: list[str]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


@pytest.mark.parametrize("command", [*CLIENT_COMMANDS, ["users", "issue-tokens"],
                                     ["projection", "rebuild"]], ids=" ".join)
def test_every_command_that_prints_data_has_json(command: list[str]) -> None:
    parser = _subcommand(command[:2])
    assert "--json" in {flag for action in parser._actions for flag in action.option_strings}
