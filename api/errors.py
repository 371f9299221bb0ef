"""Every error answers JSON `{"error": <code>, "detail": <text>}`.

Codes are the business codes of `domain.errors` when the workflow rejected a call, or a
short name per HTTP status otherwise (`Unauthorized`, `NotFound`, `ValidationError`...).
Validation errors (422) also list `errors: [{path, message}]`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import WorkflowUpdateFailedError
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


class FieldError(BaseModel):
    path: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str = Field(examples=["NotYourTask"])
    detail: str = Field(examples=["task inc-3f2a-0.approve-holding.2 is assigned to someone else"])
    errors: list[FieldError] | None = None


class ApiError(StarletteHTTPException):
    """An HTTP error with an explicit code; `code` defaults to the status' name."""

    def __init__(self, status_code: int, detail: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.code = code or STATUS_CODES.get(status_code, f"Http{status_code}")


def code_for_status(status_code: int) -> str:
    return STATUS_CODES.get(status_code, f"Http{status_code}")


def error_body(status_code: int, code: str, detail: str,
               errors: list[FieldError] | None = None) -> dict[str, Any]:
    return ErrorBody(error=code, detail=detail, errors=errors).model_dump(exclude_none=True)


def error_response(status_code: int, detail: str, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status_code, code or code_for_status(status_code), detail),
                        status_code=status_code, headers=headers)


def from_update_failure(exc: WorkflowUpdateFailedError) -> ApiError:
    """Turn a workflow's rejection (`ApplicationError(type=<code>)`) into an HTTP error."""
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.type in codes.HTTP_STATUS:
        return ApiError(codes.HTTP_STATUS[cause.type], cause.message, cause.type)
    if isinstance(cause, ApplicationError):
        # pydantic rejected the update's payload inside the workflow: a client error
        if cause.type in ("ValidationError", "ValueError"):
            return ApiError(422, cause.message)
        return ApiError(500, f"the workflow failed the request: {cause.message}",
                        cause.type or "WorkflowError")
    return ApiError(500, f"the workflow failed the request: {cause}", "WorkflowError")


def _validation_errors(exc: RequestValidationError) -> list[FieldError]:
    out: list[FieldError] = []
    for item in exc.errors():
        message = "unknown field" if item.get("type") == "extra_forbidden" else str(item["msg"])
        out.append(FieldError(path=format_loc(item.get("loc", ())), message=message))
    return out


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = exc.code if isinstance(exc, ApiError) else code_for_status(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(error_body(exc.status_code, code, detail), status_code=exc.status_code,
                        headers=exc.headers)


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


_UNAVAILABLE = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED,
                RPCStatusCode.RESOURCE_EXHAUSTED)


async def _temporal_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RPCError)
    if exc.status in _UNAVAILABLE:
        return JSONResponse(error_body(503, "Unavailable", f"Temporal: {exc.message}"),
                            status_code=503, headers={"Retry-After": "2"})
    return JSONResponse(error_body(500, "TemporalError", exc.message), status_code=500)


async def _redis_error(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(error_body(503, "Unavailable", f"Redis: {exc}"), status_code=503,
                        headers={"Retry-After": "2"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(WorkflowUpdateFailedError, _update_failed)
    app.add_exception_handler(RPCError, _temporal_error)
    app.add_exception_handler(RedisConnectionError, _redis_error)
    app.add_exception_handler(RedisTimeoutError, _redis_error)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the error statuses a route can answer."""
    described = {
        401: "Missing or invalid bearer token",
        403: "The caller's role, or object ownership, does not allow this",
        404: "No such object",
        409: "Conflict: the object is closed, or an identical request is still in flight",
        413: "Request body larger than 256 KiB",
        422: "Invalid body or parameters (unknown fields included), or Idempotency-Key reuse "
             "with a different body",
        501: "Not available in this build",
        503: "A dependency (Temporal or Redis) is unreachable",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {
            "model": ErrorBody,
            "description": described.get(status, code_for_status(status)),
            "content": {"application/json": {"example": {
                "error": code_for_status(status), "detail": described.get(status, "")}}},
        }
    return out
