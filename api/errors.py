"""Errors, and their mapping to the response envelope, in one place.

Route code raises the specific exceptions below with a sentence a person can
act on; the handlers turn them (and framework errors) into
``{"code": <status>, "msg": ..., "data": ...}``. A 500 never leaks a stack trace:
it is logged with the request id, which the response carries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from starlette import status as http
from starlette.exceptions import HTTPException as StarletteHTTPException

from infra.logging import get_logger

log = get_logger(__name__)


class ApiError(Exception):
    status = http.HTTP_400_BAD_REQUEST
    headers: dict[str, str] | None = None

    def __init__(self, msg: str, data: Any = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.data = data


class BadRequest(ApiError):
    status = http.HTTP_400_BAD_REQUEST


class PaymentRequired(ApiError):
    """A budget is exhausted: the request would spend money the owner has not allowed."""

    status = http.HTTP_402_PAYMENT_REQUIRED


class Unauthorized(ApiError):
    """No credential, or one that is malformed, expired or revoked (RFC 6750)."""

    status = http.HTTP_401_UNAUTHORIZED

    def __init__(self, msg: str, *, invalid: bool = True) -> None:
        super().__init__(msg)
        self.headers = {"WWW-Authenticate": 'Bearer error="invalid_token"' if invalid else "Bearer"}


class Forbidden(ApiError):
    """A valid credential whose role is too low for the request."""

    status = http.HTTP_403_FORBIDDEN


class NotFound(ApiError):
    status = http.HTTP_404_NOT_FOUND


class Conflict(ApiError):
    status = http.HTTP_409_CONFLICT


class Unprocessable(ApiError):
    status = http.HTTP_422_UNPROCESSABLE_CONTENT


class TooManyRequests(ApiError):
    status = http.HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, msg: str, retry_after_s: float) -> None:
        super().__init__(msg, {"retry_after_s": max(1, round(retry_after_s))})
        self.headers = {"Retry-After": str(max(1, round(retry_after_s)))}


class ServiceUnavailable(ApiError):
    """Something the request needs (Temporal, a worker) cannot answer for the moment:
    the same request may succeed when retried."""

    status = http.HTTP_503_SERVICE_UNAVAILABLE
    headers = {"Retry-After": "1"}


def envelope(
    status: int, msg: str, data: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"code": status, "msg": msg, "data": data}, headers=headers
    )


def field_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors, trimmed to what a client needs (no echo of the input)."""
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]


def _summary(errors: list[dict[str, Any]]) -> str:
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "request"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"invalid {where}: {first['msg']}{more}"


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return envelope(exc.status, exc.msg, exc.data, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    bad_json = next((e for e in raw if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error") or bad_json.get("msg", "")
        at = bad_json["loc"][-1] if bad_json.get("loc") else "?"
        msg = f"request body is not valid JSON: {reason} (at character {at})"
        return envelope(http.HTTP_400_BAD_REQUEST, msg, field_errors(raw))
    errors = field_errors(raw)
    content_type = request.headers.get("content-type", "")
    if (
        errors[0]["loc"] == ["body"]
        and request.method in ("POST", "PUT")
        and not (content_type.startswith("application/") and "json" in content_type)
    ):
        # A JSON body sent as text or a form (curl -d) is read as no JSON at all.
        msg = (
            f"send the body as JSON with Content-Type: application/json "
            f"(got {content_type or 'no Content-Type'})"
        )
        return envelope(http.HTTP_422_UNPROCESSABLE_CONTENT, msg, errors)
    return envelope(http.HTTP_422_UNPROCESSABLE_CONTENT, _summary(errors), errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == http.HTTP_404_NOT_FOUND and exc.detail == "Not Found":
        msg = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == http.HTTP_405_METHOD_NOT_ALLOWED:
        msg = f"{request.method} is not allowed on {request.url.path}"
    else:
        msg = str(exc.detail)
    return envelope(exc.status_code, msg, None, headers=getattr(exc, "headers", None))


async def _integrity_error(_request: Request, exc: Exception) -> JSONResponse:
    """A unique key or reference another request changed first (two creates of one name,
    two publishes of one workflow at once): a 409 wherever it happens, never a 500.
    Routes that expect one say more (``commit_unique``); this is the net under all."""
    return envelope(
        http.HTTP_409_CONFLICT,
        "the request conflicts with a change another request made at the same "
        "time; fetch the current state and retry",
        None,
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """The database went away mid-request (restarting, connection lost, locked): a 503
    the client can retry, not a 500. Other database errors stay 500s."""
    assert isinstance(exc, DBAPIError)
    if not (isinstance(exc, OperationalError) or exc.connection_invalidated):
        raise exc
    # The statement and its parameters stay out of the log line and the answer.
    log.warning(
        "database unavailable",
        method=request.method,
        path=request.url.path,
        error=type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__,
    )
    return envelope(
        http.HTTP_503_SERVICE_UNAVAILABLE,
        "the database is unavailable for the moment; retry shortly",
        None,
        headers={"Retry-After": "1"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
