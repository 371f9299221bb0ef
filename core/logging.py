"""structlog set up for JSON lines, with `request_id` and `incident_id` bound via contextvars.

Every line a process writes is one JSON object on stderr: structlog's own loggers and the
standard library's (uvicorn, httpx, temporalio, asyncio) alike, the latter rendered through
`structlog.stdlib.ProcessorFormatter`. Secrets never reach a line: values under keys that
name one (token, authorization, api_key, password, secret...) and bearer tokens inside any
string are replaced by `"[redacted]"`.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"
SECRET_KEY = re.compile(r"(token|authorization|api[_-]?key|password|passwd|secret|cookie)",
                        re.IGNORECASE)
BEARER = re.compile(r"(?i)\b(bearer|token)([\s=:]+)[A-Za-z0-9._~+/-]{8,}=*")
# chatty libraries: their INFO lines repeat what our own request and delivery logs say, and
# httpx's name full URLs (a webhook URL may carry a token)
QUIET = {"httpx": logging.WARNING, "httpcore": logging.WARNING, "uvicorn.access": logging.WARNING}


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", value)
    if isinstance(value, Mapping):
        return {k: REDACTED if isinstance(k, str) and SECRET_KEY.search(k) else _scrub(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact_secrets(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: no token, key or password survives into a log line."""
    for key in list(event_dict):
        if key == "event":
            event_dict[key] = _scrub(event_dict[key])
        elif SECRET_KEY.search(key) and key not in ("idempotency_key",):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _drop_color_message(logger: WrappedLogger, method: str,
                        event_dict: MutableMapping[str, Any]) -> EventDict:
    event_dict.pop("color_message", None)  # uvicorn's duplicate of `event` with ANSI codes
    return dict(event_dict)


def json_formatter() -> structlog.stdlib.ProcessorFormatter:
    """Renders both structlog events and foreign stdlib records as one JSON line."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder(),
                           _drop_color_message],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(),
        ],
    )


def configure_logging(level: str = "INFO") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "temporalio"):
        # no handlers of their own (uvicorn installs some): everything goes through the root
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, numeric))
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*_shared_processors(),
                    structlog.processors.StackInfoRenderer(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
