"""All logs are JSON lines, whoever writes them, and none carries a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "tok_3c0f1e9d5b7a4c2e8f6d"

PROGRAM = textwrap.dedent(f"""
    import logging, warnings, structlog
    from core.logging import configure_logging
    configure_logging("INFO")
    structlog.get_logger("crisis.api").info("request", path="/incidents", status=201,
                                            token="{TOKEN}", idempotency_key="k-1")
    structlog.contextvars.bind_contextvars(request_id="r-1", incident_id="inc-1")
    structlog.get_logger("crisis.api").info("with context")
    structlog.contextvars.clear_contextvars()
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("httpx").info("HTTP Request: POST http://hook?token={TOKEN}")
    logging.getLogger("httpx").warning("retrying http://hook?token={TOKEN}")
    logging.getLogger("temporalio.worker").warning("Authorization: Bearer {TOKEN}")
    warnings.warn("something deprecated")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("asyncio").exception("task failed")
""")


def test_stdlib_uvicorn_httpx_and_structlog_lines_are_json_without_secrets() -> None:
    result = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout == ""
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert TOKEN not in result.stderr
    by_event = {line["event"]: line for line in lines}
    request = by_event["request"]
    assert request["token"] == "[redacted]" and request["idempotency_key"] == "k-1"
    assert request["level"] == "info" and request["logger"] == "crisis.api"
    assert "timestamp" in request
    assert by_event["with context"]["request_id"] == "r-1"
    assert by_event["with context"]["incident_id"] == "inc-1"
    assert by_event["Started server process [42]"]["logger"] == "uvicorn.error"
    # httpx's INFO request lines are dropped (they name whole URLs); warnings stay, scrubbed
    assert not any(line["event"].startswith("HTTP Request") for line in lines)
    assert by_event["retrying http://hook?token=[redacted]"]["level"] == "warning"
    assert by_event["Authorization: Bearer [redacted]"]["logger"] == "temporalio.worker"
    assert any("something deprecated" in line["event"] for line in lines)
    failed = by_event["task failed"]
    assert failed["level"] == "error" and "ValueError: boom" in failed["exception"]
