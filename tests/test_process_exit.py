"""How a `crisis` process ends: with its command's status, its output complete, and no crash
on the way out.

The Temporal SDK's Rust threads could call into a finalizing interpreter, so a worker or an
API stopped by SIGTERM sometimes died of SIGABRT or SIGSEGV and left "Fatal Python error:
PyGILState_Release ..." in its JSON log (CI, stop 17). `cli.main.run` now flushes and ends
the process without the interpreter's teardown. The servers run here as real subprocesses
against the dev server, and are started and stopped several times, since the crash was a race.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from cli.users_cmd import issue_tokens
from core.devstack import ChildProcess, exit_description
from domain.loader import load_directory
from tests.api_fixtures import with_db
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 3


def crisis(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRISIS_")}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=90, check=False)


def test_a_usage_error_exits_2_with_the_usage_on_stderr() -> None:
    result = crisis("no-such-command")
    assert result.returncode == 2, result
    assert "usage: crisis" in result.stderr and "invalid choice: 'no-such-command'" in (
        result.stderr)
    assert result.stdout == ""


def test_help_is_printed_whole_and_exits_0() -> None:
    result = crisis("--help")
    assert result.returncode == 0, result
    assert result.stdout.startswith("usage: crisis")
    assert "worker" in result.stdout and result.stdout.endswith("\n")


def test_an_unexpected_failure_shows_its_traceback_and_exits_1(tmp_path: Path) -> None:
    script = ("import cli.main as m\n"
              "def boom(args):\n"
              "    print('before the failure', flush=False)\n"
              "    raise RuntimeError('a bug, not a server that is down')\n"
              "def parser():\n"
              "    import argparse\n"
              "    p = argparse.ArgumentParser(prog='crisis')\n"
              "    p.set_defaults(handler=boom)\n"
              "    return p\n"
              "m.build_parser = parser\n"
              "m.run([])\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 1, result
    assert result.stdout == "before the failure\n"  # buffered output is not lost
    assert "Traceback" in result.stderr
    assert "RuntimeError: a bug, not a server that is down" in result.stderr


def _json_lines_only(output: str) -> list[str]:
    """The lines of `output` that are not one JSON object each."""
    bad = []
    for line in output.splitlines():
        try:
            if not isinstance(json.loads(line), dict):
                bad.append(line)
        except ValueError:
            bad.append(line)
    return bad


@pytest.mark.stack
@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_stopped_worker_and_api_exit_0_and_write_only_json(
        dev_env: WorkflowEnvironment, redis_url: str, tmp_path: Path,
        stop_with: signal.Signals) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRISIS_")}
    env = {**clean, "CRISIS_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
           "CRISIS_REDIS_URL": with_db(redis_url, 13),
           "CRISIS_TASK_QUEUE": f"exit-{uuid.uuid4().hex[:8]}",
           "CRISIS_TOKENS_FILE": str(tmp_path / "tokens.json"), "PYTHONUNBUFFERED": "1"}
    issue_tokens(load_directory(ROOT / "config" / "directory.yaml").definition,
                 tmp_path / "demo-tokens.json", tmp_path / "tokens.json")
    for round_ in range(ROUNDS):
        port = free_port()
        worker_log = tmp_path / f"worker-{round_}.log"
        with worker_log.open("w") as log:  # read while it runs: it says when it has started
            worker = subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], cwd=ROOT,
                                      env=env, stdout=log, stderr=subprocess.STDOUT)
        api = subprocess.Popen([sys.executable, "-m", "cli.main", "api", "--port", str(port)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            # the API answers ready once Temporal and Redis do; the worker logs "worker
            # started" once it handles signals (stopped while still importing, a process
            # takes the signal's default action and dies of it)
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2,
                                 trust_env=False).status_code == 200 \
                            and '"worker started"' in worker_log.read_text():
                        break
                except httpx.HTTPError:
                    pass
                assert api.poll() is None and worker.poll() is None, "a server exited early"
                assert time.monotonic() < deadline, "the servers were not ready within 60 s"
                time.sleep(0.1)
            # the worker exits 0; uvicorn ends its graceful shutdown by raising a caught
            # SIGTERM again (the API dies of SIGTERM, as a supervisor expects), and exits 0
            # after Ctrl-C
            api_status = -signal.SIGTERM if stop_with == signal.SIGTERM else 0
            for name, process, status in (("api", api, api_status), ("worker", worker, 0)):
                process.send_signal(stop_with)
                output, _ = process.communicate(timeout=60)
                if process is worker:
                    output = worker_log.read_text()
                assert process.returncode == status, (
                    f"round {round_}: {name} {exit_description(process.returncode)}\n{output}")
                assert output.strip(), f"{name} wrote nothing"
                assert _json_lines_only(output) == [], f"round {round_}: {name}: {output}"
        finally:
            for process in (api, worker):
                if process.poll() is None:
                    process.kill()
                    process.wait()


def test_the_stack_says_when_a_server_crashed_on_the_way_out(tmp_path: Path) -> None:
    aborts = ("import os, signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *_: os.abort())\n"
              "print('handler' + ' set', flush=True)\n"
              "time.sleep(60)\n")
    clean = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
             "print('handler' + ' set', flush=True)\n"
             "time.sleep(60)\n")
    outcomes = {}
    for name, script in (("aborts", aborts), ("clean", clean)):
        child = ChildProcess(name, [sys.executable, "-c", script], tmp_path / f"{name}.log",
                             dict(os.environ))
        child.start()
        deadline = time.monotonic() + 30
        while "handler set" not in child.log_path.read_text():  # (the argv is logged too)
            assert time.monotonic() < deadline, child.log_path.read_text()
            time.sleep(0.05)
        outcomes[name] = child.stop(10.0, hurry=lambda: False)
    assert outcomes == {"aborts": "stopped, but died of SIGABRT", "clean": "stopped"}

    gone = ChildProcess("gone", [sys.executable, "-c", "import os; os.abort()"],
                        tmp_path / "gone.log", dict(os.environ))
    gone.start()
    deadline = time.monotonic() + 30
    while gone.running():
        assert time.monotonic() < deadline, "the child did not abort"
        time.sleep(0.05)
    assert gone.stop(10.0, hurry=lambda: False) == "had already died of SIGABRT"


def test_exit_descriptions_name_the_code_or_the_signal() -> None:
    assert exit_description(3) == "exited with code 3"
    assert exit_description(-signal.SIGSEGV) == "died of SIGSEGV"
    assert exit_description(-200) == "died of signal 200"


@pytest.mark.stack
async def test_a_worker_stopped_while_the_version_store_does_not_answer_stops_at_once(
        dev_env: WorkflowEnvironment, redis_url: str, tmp_path: Path) -> None:
    """A worker seeds the version store on start, through updates to the policy catalog. If
    the catalog does not answer (here: a catalog of that id already runs on a queue nobody
    serves), the worker still stops on SIGTERM at once and exits 0, where it used to wait for
    the server to give up on the update first (CI, stop 22: past the test's 60 s)."""
    queue = f"exit-{uuid.uuid4().hex[:8]}"
    stuck = f"catalog-{uuid.uuid4().hex[:8]}"
    await dev_env.client.start_workflow("PolicyCatalog", id=stuck,
                                        task_queue=f"{queue}-nobody-serves")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRISIS_")}
    env = {**clean, "CRISIS_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
           "CRISIS_REDIS_URL": with_db(redis_url, 13), "CRISIS_TASK_QUEUE": queue,
           "CRISIS_POLICY_CATALOG_ID": stuck,
           "CRISIS_TOKENS_FILE": str(tmp_path / "tokens.json"), "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "worker", cwd=ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while '"worker started"' not in log_path.read_text():
            assert worker.returncode is None, log_path.read_text()
            assert time.monotonic() < deadline, "the worker did not start within 60 s"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # seeding: its first update waits on the stuck catalog
        assert worker.returncode is None
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(worker.wait(), timeout=30)
        took = time.monotonic() - started
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    output = log_path.read_text()
    assert code == 0, output
    events = [json.loads(line)["event"] for line in output.splitlines()]
    assert "policy_seed_interrupted" in events and events[-1] == "worker stopped", output
    # nothing was seeded, and a stop is no failure: no traceback
    assert not {"policy_seed", "policy_seed_failed"} & set(events), output
    assert "Traceback" not in output, output
    assert took < 10, f"stopping took {took:.1f} s"
