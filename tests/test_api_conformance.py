"""The OpenAPI tells the truth: Schemathesis and a generated client against the live API.

The API runs in its own process (`tests.live_stack`), on the demo directory and playbooks,
with a worker, so every phase reaches real incidents and tasks. The Schemathesis pass is
bounded (a few examples per operation, one worker, a fixed seed) to stay well under a
minute per caller; `make`-free reproduction: `st run --checks all <url>/openapi.json -H
'Authorization: Bearer <token>'` from the repository root (it reads schemathesis.toml).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from core.config import ROOT
from tests.live_stack import LiveStack, live_stack

pytestmark = pytest.mark.stack

BIN = Path(sys.executable).parent
COMMUNICATOR = "cara-comms"
ADMIN = "ada-admin"
MAX_EXAMPLES = 4
# /playbooks/validate: its YAML body (application/yaml) is not yet described so that
# generators respect it. The live-event streams never end, which a request/response fuzzer
# can't judge: tests/test_web_live.py checks them (auth per subscriber, resume, bad ids).
EXCLUDED_PATHS = ("/playbooks/validate", "/events", "/incidents/{incident_id}/events")


@pytest.fixture(scope="module")
async def live(dev_env: WorkflowEnvironment, redis_url: str,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveStack]:
    workdir = tmp_path_factory.mktemp("live-api")
    async with live_stack(workdir, dev_env.client.service_client.config.target_host,
                          redis_url.rsplit("/", 1)[0] + "/5") as stack:
        yield stack


async def run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
              limit: float = 240) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), limit)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.parametrize("caller", [COMMUNICATOR, ADMIN])
async def test_schemathesis_finds_no_failures(live: LiveStack, caller: str) -> None:
    excluded = [arg for path in EXCLUDED_PATHS for arg in ("--exclude-path", path)]
    code, out = await run(
        str(BIN / "schemathesis"), "run", f"{live.url}/openapi.json", "--checks", "all",
        "-H", f"Authorization: Bearer {live.tokens[caller]}",
        "--max-examples", str(MAX_EXAMPLES), "--seed", "7", "--workers", "1", "--no-color",
        "--output-sanitize", "false", "--phases", "examples,coverage,fuzzing,stateful",
        *excluded)
    assert code == 0, out[-6000:]
    summary = out[out.rfind("SUMMARY"):]
    tested = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert tested and int(tested.group(2)) > 50, summary  # it did reach the API, and passed


async def test_generated_client_opens_an_incident_and_decides_a_task(
        live: LiveStack, tmp_path: Path) -> None:
    config = tmp_path / "generator.yaml"
    # `POST /playbooks/validate` also takes `application/yaml`, which generators skip (it
    # offers JSON too); map it to bytes so that skipping it is not a warning
    config.write_text("package_name_override: crisis_client\n"
                      "content_type_overrides:\n  application/yaml: application/octet-stream\n")
    code, out = await run(
        str(BIN / "openapi-python-client"), "generate", "--url", f"{live.url}/openapi.json",
        "--meta", "none", "--output-path", str(tmp_path / "crisis_client"),
        "--config", str(config), cwd=tmp_path)
    assert code == 0, out
    assert "warning" not in out.lower(), out

    sys.path.insert(0, str(tmp_path))
    try:
        await _open_and_decide(live)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "crisis_client" or
                     m.startswith("crisis_client.")]:
            del sys.modules[name]


async def _open_and_decide(live: LiveStack) -> None:
    client_mod: Any = importlib.import_module("crisis_client")
    models: Any = importlib.import_module("crisis_client.models")
    open_incident: Any = importlib.import_module("crisis_client.api.incidents.open_incident")
    list_tasks: Any = importlib.import_module("crisis_client.api.tasks.list_tasks")
    decide_task: Any = importlib.import_module("crisis_client.api.tasks.decide_task")

    def as_(person: str) -> Any:
        return client_mod.AuthenticatedClient(base_url=live.url, token=live.tokens[person],
                                              raise_on_unexpected_status=True)

    async with as_(COMMUNICATOR) as communicator:
        opened = await open_incident.asyncio_detailed(
            client=communicator, idempotency_key="generated-client-1",
            body=models.OpenIncidentRequest(
                title="Generated client", summary="Opened through the generated client",
                severity=models.Severity.HIGH, playbook="viral-complaint"))
        assert opened.status_code == 201, opened.content
        incident = opened.parsed
        assert isinstance(incident, models.OpenIncidentResponse) and incident.created

        async def open_tasks() -> list[Any]:
            page = await list_tasks.asyncio(client=communicator, incident_id=incident.id,
                                            state=models.TaskState.OPEN)
            assert isinstance(page, models.TaskPage)
            return list(page.items)

        tasks: list[Any] = []
        for _ in range(200):
            tasks = await open_tasks()
            if tasks:
                break
            await asyncio.sleep(0.1)
        assert tasks, "the incident's approval tasks never showed"

    task = tasks[0]
    async with as_(task.assignee) as approver:
        decided = await decide_task.asyncio_detailed(
            task.id, client=approver, idempotency_key="generated-client-decision",
            body=models.DecisionBody(decision=models.DecisionBodyDecision.APPROVE,
                                     comment="Approved from a generated client"))
    assert decided.status_code == 200, decided.content
    result = decided.parsed
    assert isinstance(result, models.DecisionOut)
    assert result.task.id == task.id and result.task.state == models.TaskState.APPROVED
    assert result.task.decided_by == task.assignee
