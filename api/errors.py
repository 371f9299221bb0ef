"""Every error answers JSON `{"error": <code>, "detail": <text>}`; this module maps to HTTP.

Codes are the business codes of `domain.errors` when the workflow rejected a call, the API's
own codes below (`UnknownPlaybook`, `IdempotencyKeyReused`...), or a short name per HTTP
status otherwise (`Unauthorized`, `NotFound`, `ValidationError`...). Validation errors (422)
also list `errors: [{path, message}]`. A dependency that is down (Temporal or Redis) is 503
with `Retry-After`.

The domain knows nothing about HTTP: the status of a domain error follows from its family
(`NotFoundError` 404, `PermissionDenied` 403, `ConflictError` 409, `InvalidCommand` 422).
`responses(...)` documents, per route, the statuses and the codes each can carry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from domain import errors as codes
from domain.validation import format_loc

STATUS_CODES: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationError",
    500: "InternalError",
    501: "NotImplemented",
    503: "Unavailable",
}

UNKNOWN_PLAYBOOK: Final = codes.UNKNOWN_PLAYBOOK
SEVERITY_NOT_SUPPORTED: Final = codes.SEVERITY_NOT_SUPPORTED
NO_ROUTE: Final = codes.NO_ROUTE
# The API's own codes: HTTP-level rules, not business ones
IDEMPOTENCY_KEY_REUSED: Final = "IdempotencyKeyReused"
REQUEST_IN_FLIGHT: Final = "RequestInFlight"
BODY_TOO_DEEP: Final = "BodyTooDeep"
UNAVAILABLE: Final = "Unavailable"

_FAMILY_STATUS: tuple[tuple[type[codes.LedgerError], int], ...] = (
    (codes.NotFoundError, 404),
    (codes.PermissionDenied, 403),
    (codes.ConflictError, 409),
    (codes.InvalidCommand, 422),
)

API_CODE_STATUS: dict[str, int] = {
    IDEMPOTENCY_KEY_REUSED: 422,
    BODY_TOO_DEEP: 422,
    REQUEST_IN_FLIGHT: 409,
}

RETRY_AFTER_SECONDS = 2


def status_for(error: codes.LedgerError | type[codes.LedgerError]) -> int:
    """The HTTP status of a domain error (by its family); 422 for an unfamiliar one."""
    cls = error if isinstance(error, type) else type(error)
    for family, status in _FAMILY_STATUS:
        if issubclass(cls, family):
            return status
    return 422


def status_for_code(code: str) -> int | None:
    """The HTTP status a business code answers with, or None for a status name."""
    cls = codes.error_class(code)
    if cls is not None:
        return status_for(cls)
    return API_CODE_STATUS.get(code)


class FieldError(BaseModel):
    path: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str = Field(description="a stable machine-readable code (see each response)",
                       examples=["NotYourTask"])
    detail: str = Field(examples=["task inc-3f2a-0.approve-holding.2 is assigned to someone else"])
    errors: list[FieldError] | None = Field(
        default=None, description="per-field problems (validation errors only)")


class ApiError(StarletteHTTPException):
    """An HTTP error with an explicit code; `code` defaults to the status' name."""

    def __init__(self, status_code: int, detail: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.code = code or STATUS_CODES.get(status_code, f"Http{status_code}")

    @classmethod
    def of(cls, error: codes.LedgerError) -> ApiError:
        return cls(status_for(error), error.message, error.code)


def code_for_status(status_code: int) -> str:
    return STATUS_CODES.get(status_code, f"Http{status_code}")


def error_body(status_code: int, code: str, detail: str,
               errors: list[FieldError] | None = None) -> dict[str, Any]:
    return ErrorBody(error=code, detail=detail, errors=errors).model_dump(exclude_none=True)


def unavailable_headers() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_SECONDS)}


def from_update_failure(exc: WorkflowUpdateFailedError) -> ApiError:
    """Turn a workflow's rejection (`ApplicationError(type=<code>)`) into an HTTP error."""
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.type and codes.error_class(cause.type):
        return ApiError.of(codes.error_for(cause.type, cause.message))
    if isinstance(cause, ApplicationError):
        # pydantic rejected the update's payload inside the workflow: a client error
        if cause.type in ("ValidationError", "ValueError"):
            return ApiError(422, cause.message)
        return ApiError(500, f"the workflow failed the request: {cause.message}",
                        cause.type or "WorkflowError")
    return ApiError(500, f"the workflow failed the request: {cause}", "WorkflowError")


_UNAVAILABLE = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED,
                RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.CANCELLED)


def dependency_down(exc: BaseException) -> str | None:
    """Which dependency `exc` says is unreachable ("Temporal: ...", "Redis: ..."), if any.

    Used by the exception handlers and by the outer middleware (errors raised in the
    idempotency middleware never reach FastAPI's handlers)."""
    if isinstance(exc, RPCError) and exc.status in _UNAVAILABLE:
        return f"Temporal: {exc.message}"
    if isinstance(exc, WorkflowUpdateRPCTimeoutOrCancelledError):
        return "Temporal: the update timed out"
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return f"Redis: {exc}"
    return None


def _validation_errors(exc: RequestValidationError) -> list[FieldError]:
    out: list[FieldError] = []
    for item in exc.errors():
        message = "unknown field" if item.get("type") == "extra_forbidden" else str(item["msg"])
        out.append(FieldError(path=format_loc(item.get("loc", ())), message=message))
    return out


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_PATH_PARAM = re.compile(r"\\{[^}/]+\\}")  # a `{param}` after re.escape


@lru_cache(maxsize=256)
def _template(path_template: str) -> re.Pattern[str]:
    return re.compile(_PATH_PARAM.sub("[^/]+", re.escape(path_template)))


def allowed_methods(request: Request) -> list[str]:
    """The methods of this path (for the `Allow` header of a 405), as the OpenAPI documents
    them: the most literal path template that matches (`/playbooks/validate`, not
    `/playbooks/{playbook_id}`). Paths outside the schema: every route that matches."""
    path = request.url.path
    best: tuple[int, dict[str, Any]] | None = None
    for template, item in request.app.openapi().get("paths", {}).items():
        if _template(template).fullmatch(path):
            params = template.count("{")
            if best is None or params < best[0]:
                best = (params, item)
    if best is not None:
        return [m for m in _METHODS if m.lower() in best[1]]
    return [method for method in _METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                   for route in request.app.router.routes)]


_FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = exc.code if isinstance(exc, ApiError) else code_for_status(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 400 and detail == _FASTAPI_BODY_PARSE_ERROR:
        # FastAPI's answer to a body that is not even text (e.g. not UTF-8): like any other
        # malformed JSON, that is a validation error
        return JSONResponse(error_body(422, "ValidationError", "the body is not valid JSON"),
                            status_code=422)
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return JSONResponse(error_body(exc.status_code, code, detail), status_code=exc.status_code,
                        headers=headers or None)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = _validation_errors(exc)
    detail = "; ".join(f"{f.path}: {f.message}" for f in fields) or "invalid request"
    return JSONResponse(error_body(422, "ValidationError", detail, fields), status_code=422)


async def _update_failed(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WorkflowUpdateFailedError)
    error = from_update_failure(exc)
    return JSONResponse(error_body(error.status_code, error.code, str(error.detail)),
                        status_code=error.status_code)


async def _ledger_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, codes.LedgerError)
    return JSONResponse(error_body(status_for(exc), exc.code, exc.message),
                        status_code=status_for(exc))


def unavailable_response(what: str) -> JSONResponse:
    return JSONResponse(error_body(503, UNAVAILABLE, what), status_code=503,
                        headers=unavailable_headers())


async def _temporal_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RPCError)
    down = dependency_down(exc)
    if down is not None:
        return unavailable_response(down)
    return JSONResponse(error_body(500, "TemporalError", exc.message), status_code=500)


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return unavailable_response(dependency_down(exc) or str(exc))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(WorkflowUpdateFailedError, _update_failed)
    app.add_exception_handler(codes.LedgerError, _ledger_error)
    app.add_exception_handler(RPCError, _temporal_error)
    app.add_exception_handler(WorkflowUpdateRPCTimeoutOrCancelledError, _unavailable)
    app.add_exception_handler(RedisConnectionError, _unavailable)
    app.add_exception_handler(RedisTimeoutError, _unavailable)


_DESCRIBED = {
    401: "Missing or invalid bearer token",
    403: "The caller's role, or object ownership, does not allow this",
    404: "No such object",
    409: "Conflict: the object is closed, or an identical request is still in flight",
    413: "Request body larger than the limit (256 KiB by default)",
    415: "Unsupported request content type",
    422: "Invalid body or parameters (unknown fields, JSON/YAML nested too deep), or "
         "Idempotency-Key reuse with a different body",
    501: "Not available in this build",
    503: "A dependency (Temporal or Redis) is unreachable; retry after `Retry-After` seconds",
}
_ALWAYS = {  # codes every route answering this status can carry
    401: ["Unauthorized"],
    403: ["Forbidden"],
    404: ["NotFound"],
    409: [],
    413: ["PayloadTooLarge"],
    415: ["UnsupportedMediaType"],
    422: ["ValidationError"],
    501: ["NotImplemented"],
    503: [UNAVAILABLE],
}
_RETRY_AFTER_HEADER = {"Retry-After": {
    "description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}


def responses(*statuses: int, errors: Iterable[str] = ()) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the error statuses a route can answer.

    `errors` are the business codes the route can answer (domain codes or the API's own);
    each is listed under its status, after the status' generic codes.
    """
    by_status: dict[int, list[str]] = {s: list(_ALWAYS.get(s, [code_for_status(s)]))
                                       for s in statuses}
    for code in errors:
        status = status_for_code(code)
        if status is None or status not in by_status:
            raise ValueError(f"error code {code!r} needs status {status} in responses()")
        if code not in by_status[status]:
            by_status[status].append(code)
    out: dict[int | str, dict[str, Any]] = {}
    for status, listed in by_status.items():
        text = _DESCRIBED.get(status, code_for_status(status))
        if listed:
            text += ". Codes: " + ", ".join(f"`{c}`" for c in listed)
        entry: dict[str, Any] = {
            "model": ErrorBody, "description": text,
            "content": {"application/json": {"examples": {
                code: {"value": {"error": code, "detail": _DESCRIBED.get(status, code)}}
                for code in (listed or [code_for_status(status)])}}}}
        if status in (409, 503):
            entry["headers"] = _RETRY_AFTER_HEADER
        out[status] = entry
    return out
