"""OpenTelemetry tracing end to end: `crisis api` and `crisis worker` export to an OTLP
receiver when `CRISIS_OTLP_ENDPOINT` is set, and to nothing when it is not.

The receiver is a real OTLP/gRPC TraceService on loopback (opentelemetry-proto's generated
servicer), so the spans are the ones a collector would get. One incident opened over HTTP
must show as one trace: FastAPI's server span, the client's update-with-start span, and the
workflow and activity spans on the worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from cli.users_cmd import issue_tokens
from domain.loader import load_directory
from tests.api_fixtures import MATRIX_DIRECTORY, with_db
from tests.servers import free_port

grpc = pytest.importorskip("grpc")
trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
trace_grpc = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc")

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK: dict[str, Any] = {
    "id": "traced", "name": "One approval", "version": 1,
    "defaults": {"channels": ["log"], "respect_working_hours": False},
    "steps": [
        {"id": "tell", "notify": {"to": [{"person": "liam"}], "message": "heads up"}},
        {"id": "done", "resolution": {}},
    ],
}


class Receiver(trace_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str]] = []  # (service, name, trace id)
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "?")
                for scope in resource_spans.scope_spans:
                    self.spans += [(service, span.name, span.trace_id.hex())
                                   for span in scope.spans]
        return trace_service.ExportTraceServiceResponse()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(grace=None)


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cli.main", *argv], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, process_group=0)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_one_incident_is_one_trace_across_api_and_worker(
        receiver: tuple[Receiver, int], dev_env: WorkflowEnvironment, redis_url: str,
        tmp_path: Path) -> None:
    servicer, otlp_port = receiver
    (tmp_path / "playbooks").mkdir()
    directory_file = tmp_path / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(MATRIX_DIRECTORY))
    (tmp_path / "playbooks" / "traced.yaml").write_text(yaml.safe_dump(PLAYBOOK))
    users = issue_tokens(load_directory(directory_file).definition, tmp_path / "demo.json",
                         tmp_path / "tokens.json")
    token = next(u["token"] for u in users if u["id"] == "cora")
    api_port = free_port()
    env = {**os.environ,
           "CRISIS_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
           "CRISIS_REDIS_URL": with_db(redis_url, 12),
           "CRISIS_TASK_QUEUE": f"traced-{uuid.uuid4().hex[:8]}",
           "CRISIS_TOKENS_FILE": str(tmp_path / "tokens.json"),
           "CRISIS_DIRECTORY_FILE": str(directory_file),
           "CRISIS_PLAYBOOKS_DIR": str(tmp_path / "playbooks"),
           "CRISIS_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
           "OTEL_BSP_SCHEDULE_DELAY": "200"}
    worker = start(["worker"], env, tmp_path / "worker.log")
    api = start(["api", "--port", str(api_port)], env, tmp_path / "api.log")
    url = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert api.poll() is None, (tmp_path / "api.log").read_text()
            assert time.monotonic() < deadline, "the API never became ready"
            time.sleep(0.2)
        opened = httpx.post(f"{url}/incidents", headers={"Authorization": f"Bearer {token}"},
                            json={"title": "traced", "summary": "s", "severity": "high",
                                  "playbook": "traced"}, timeout=30)
        assert opened.status_code == 201, opened.text

        def traced() -> dict[str, set[str]] | None:
            with servicer.lock:
                spans = list(servicer.spans)
            (post,) = [t for s, name, t in spans if name == "POST /incidents"] or [None]
            if post is None:
                return None
            one_trace = {f"{s}:{name}" for s, name, t in spans if t == post}
            wanted = {"crisis-api:StartUpdateWithStartWorkflow:IncidentWorkflow",
                      "crisis-worker:RunWorkflow:IncidentWorkflow",
                      "crisis-worker:RunActivity:notify_batch",
                      "crisis-worker:RunActivity:project"}
            return {"trace": one_trace} if wanted <= one_trace else None

        deadline = time.monotonic() + 30
        while (found := traced()) is None:
            assert time.monotonic() < deadline, f"spans so far: {servicer.spans}"
            time.sleep(0.2)
        assert "crisis-api:POST /incidents" in found["trace"]
        # one span per request, not one per ASGI message
        assert not any(name.endswith((" http send", " http receive")) for name in found["trace"])
    finally:
        stop(api)
        stop(worker)


def test_without_an_endpoint_nothing_is_traced() -> None:
    from core.config import Settings
    from core.tracing import tracing_interceptors

    assert tracing_interceptors(Settings(otlp_endpoint=""), "crisis-api") == []
