"""Schemathesis hooks (`SCHEMATHESIS_HOOKS=tests.schemathesis_hooks`) for what JSON Schema
cannot say about this API, applied to every request of every phase. Each makes a
generated value one a real client would send; values that break the declared schema are
left alone, so negative cases stay negative.

- `Idempotency-Key` is unique per distinct request: a valid generated key gets a unique
  suffix, so two different generated requests never share one (a shared one is,
  correctly, 422 `IdempotencyKeyReused`).
- `cursor` (custom format `cursor`) is only ever a `next_cursor` the API issued: a
  well-formed generated one that decodes to no position is swapped for a real one (a
  timeline's own kind on `/timeline`, whose cursors are by seq).
- `playbook` and `severity` of `POST /incidents` name a playbook that exists and a
  severity it handles (from `CRISIS_PLAYBOOKS_DIR`, default `playbooks/`), as test data
  with existing ids would; anything else is, correctly, 422 `UnknownPlaybook` or
  `SeverityNotSupported`.
"""

from __future__ import annotations

import re
import uuid
from functools import cache
from typing import Any

import schemathesis
from schemathesis.generation.meta import CoverageScenario

from api.openapi import CURSOR_PATTERN, IDEMPOTENCY_KEY_PATTERN
from api.playbook_registry import PlaybookRegistry
from core.config import get_settings
from domain.directory import IDENT_PATTERN
from readmodel.reader import decode_cursor, encode_cursor, timeline_cursor, timeline_seq

_VALID_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_WELL_FORMED_CURSOR = re.compile(CURSOR_PATTERN)
_IDENT = re.compile(IDENT_PATTERN)
ISSUED_CURSOR = encode_cursor((1.0e9, "inc-0000000000000000000000-0"))
ISSUED_TIMELINE_CURSOR = timeline_cursor(1)  # a timeline pages by seq: its own cursors


@cache
def _severities() -> dict[str, list[str]]:
    settings = get_settings()
    registry = PlaybookRegistry(settings.playbooks_dir, settings.directory_file)
    return {s.id: [v.value for v in s.definition.severities] for s in registry.all()}


def _issued(cursor: str, timeline: bool) -> bool:
    try:
        timeline_seq(cursor) if timeline else decode_cursor(cursor)
    except ValueError:
        return False
    return True


def _removes_a_parameter(case: Any) -> bool:
    data = getattr(getattr(getattr(case, "meta", None), "phase", None), "data", None)
    return getattr(data, "scenario", None) == CoverageScenario.MISSING_PARAMETER


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    if _removes_a_parameter(case):
        return  # the case is about what is missing: send it as drawn
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and _VALID_KEY.match(key):
        case.headers["Idempotency-Key"] = f"{key[:255 - 17]}-{uuid.uuid4().hex[:16]}"
    cursor = (case.query or {}).get("cursor")
    timeline = case.path.endswith("/timeline")
    if (isinstance(cursor, str) and len(cursor) <= 500 and _WELL_FORMED_CURSOR.match(cursor)
            and not _issued(cursor, timeline)):
        case.query["cursor"] = ISSUED_TIMELINE_CURSOR if timeline else ISSUED_CURSOR
    body = case.body
    if (case.method == "POST" and case.path == "/incidents" and isinstance(body, dict)
            and isinstance(body.get("playbook"), str) and _IDENT.match(body["playbook"])
            and len(body["playbook"]) <= 64):
        severities = _severities()
        if body["playbook"] not in severities:
            body["playbook"] = sorted(severities)[0]
        handled = severities[body["playbook"]]
        if isinstance(body.get("severity"), str) and body["severity"] not in handled:
            body["severity"] = handled[0]
