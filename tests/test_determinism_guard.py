"""The worker runs workflows unsandboxed (worker/main.py). What stops a nondeterministic call
from slipping into workflow or domain code is then ruff's banned-API rule in
`workflows/ruff.toml` (and `domain/ruff.toml`, which extends it), and the replay tests under
the SDK sandbox. These tests prove the rule bites where it must and nowhere else."""

from __future__ import annotations

import subprocess
import sys

import pytest
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from worker.main import workflow_runner

CALLS = {
    "from datetime import datetime\n\n\nx = datetime.now()\n": "datetime.datetime.now",
    "from datetime import date\n\n\nx = date.today()\n": "datetime.date.today",
    "import time\n\n\nx = time.time()\n": "time.time",
    "import random\n\n\nx = random.random()\n": "random",
    "import uuid\n\n\nx = uuid.uuid4()\n": "uuid.uuid4",
    "import os\n\n\nx = os.environ['X']\n": "os.environ",
    "import httpx\n\n\nx = httpx.get('http://example.com')\n": "httpx",
}


def ruff(source: str, filename: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
         "--stdin-filename", filename, "-"],
        input=source, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("source", CALLS, ids=list(CALLS.values()))
@pytest.mark.parametrize("where", ["workflows/probe.py", "domain/probe.py"])
def test_a_nondeterministic_call_in_workflow_or_domain_code_fails_lint(
        source: str, where: str) -> None:
    result = ruff(source, where)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"TID251 `{CALLS[source]}` is banned" in result.stdout


@pytest.mark.parametrize("where", ["api/probe.py", "activities/probe.py"])
def test_the_same_calls_are_fine_outside_the_workflow(where: str) -> None:
    source = "import uuid\nfrom datetime import datetime\n\nx = datetime.now(), uuid.uuid4()\n"
    result = ruff(source, where)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_worker_runs_unsandboxed_and_the_replay_check_under_the_sandbox() -> None:
    assert isinstance(workflow_runner(), UnsandboxedWorkflowRunner)
    strict = workflow_runner(strict=True)
    assert isinstance(strict, SandboxedWorkflowRunner)
    passed = strict.restrictions.passthrough_modules
    assert "domain" in passed and not any(m.startswith("workflows") for m in passed)
