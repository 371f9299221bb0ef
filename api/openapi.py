"""The OpenAPI document, made to tell the truth about rules that live outside the routes.

FastAPI derives the schema from each route's signature. A few rules are enforced in one
place for every route instead (the ASGI middleware and the read model), so they are
declared here, once, for every operation that has the parameter:

- `Idempotency-Key` (checked by `api.idempotency.valid_key`): 1-255 printable characters
  without `:`, no surrounding spaces (HTTP strips them), unique per distinct request.
- `cursor` (decoded by `readmodel.reader.decode_cursor`): an opaque base64url token, only
  ever one a listing returned as `next_cursor`; the custom format `cursor` says so.
- datetime query parameters: ISO 8601, or Unix seconds (pydantic reads both).

A 405 carries an `Allow` header listing every method of the path (`api.errors`); the API's
description says so, since an undeclared method has no operation to document it on.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

# printable Latin-1 (what `str.isprintable` accepts in a header) without ':'
_KEY_CHAR = r"!-9;-~\u00a1-\u00ac\u00ae-\u00ff"
IDEMPOTENCY_KEY_PATTERN = f"^[{_KEY_CHAR}](?:[ {_KEY_CHAR}]{{0,253}}[{_KEY_CHAR}])?$"
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
_DATETIME_QUERY = frozenset({"opened_after", "opened_before", "start", "end"})

_IDEMPOTENCY_KEY_DESCRIPTION = (
    "Retry-safe key, unique per distinct request: the same key and body return the stored "
    "response (`Idempotent-Replayed: true`); the same key with another body is 422 "
    "`IdempotencyKeyReused`; while the first is still running, 409 `RequestInFlight`.")
_CURSOR_DESCRIPTION = "Opaque: the `next_cursor` of the previous page"


def refine(schema: dict[str, Any]) -> dict[str, Any]:
    for path, item in schema.get("paths", {}).items():
        if path.startswith("/demo/"):
            continue  # the demo sink declares its own (any printable ASCII, ':' included)
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                _refine_parameter(parameter)
    return schema


def _refine_parameter(parameter: dict[str, Any]) -> None:
    where, name = parameter.get("in"), parameter.get("name")
    examples = parameter.get("schema", {}).get("examples")
    if where == "header" and name == "Last-Event-ID":
        # optional header: absent, or a stream id (the `null` branch of `str | None` would
        # read as the text "null")
        parameter["schema"] = {"type": "string", "maxLength": 50,
                               "pattern": r"^([0-9]{1,20}-[0-9]{1,20})?$"}
    elif where == "header" and name == "Idempotency-Key":
        parameter["schema"] = {"type": "string", "minLength": 1, "maxLength": 255,
                               "pattern": IDEMPOTENCY_KEY_PATTERN}
        parameter["description"] = _IDEMPOTENCY_KEY_DESCRIPTION
    elif where == "query" and name in _DATETIME_QUERY:
        # pydantic reads a datetime from ISO 8601 or from Unix seconds: say both
        parameter["schema"] = {"anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "string", "pattern": r"^-?[0-9]{1,12}(?:\.[0-9]{1,9})?$"},
            {"type": "null"}]}
        parameter["description"] = (parameter.get("description", "") +
                                    " (ISO 8601, or Unix seconds)").strip()
    elif where == "query" and name == "cursor":
        parameter["schema"] = {"type": "string", "format": "cursor", "minLength": 1,
                               "maxLength": 500, "pattern": CURSOR_PATTERN}
        parameter["description"] = _CURSOR_DESCRIPTION
    if examples is not None and "examples" not in parameter["schema"]:
        parameter["schema"]["examples"] = examples


def install_openapi(app: FastAPI) -> None:
    """Serve the refined schema at `/openapi.json`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = refine(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
