"""The one place where failures become HTTP answers: ``{"error": CODE, "message": ...}``.

gRPC status codes map as INVALID_ARGUMENT (and OUT_OF_RANGE) -> 400, UNAUTHENTICATED ->
401 (with ``WWW-Authenticate: Bearer``), PERMISSION_DENIED -> 403, NOT_FOUND -> 404,
RESOURCE_EXHAUSTED -> 429 (with ``Retry-After`` from the gateway's RetryInfo),
UNAVAILABLE, DEADLINE_EXCEEDED and FAILED_PRECONDITION (not ready) -> 503, and anything
else (INTERNAL, UNKNOWN) -> 500: a caller's mistake is never a 500. The caller's
problems (400-429) carry the gateway's message (it names the field or the limit); 503
and 500 get a fixed text, so no internal address or traceback reaches a browser.
Request validation errors are 400 too.
"""

from __future__ import annotations

import http
import logging
import math

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from movierec.server.retry_info import retry_after

log = logging.getLogger(__name__)

_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
    grpc.StatusCode.FAILED_PRECONDITION: 503,
}
_FIXED = {
    grpc.StatusCode.UNAVAILABLE: "the recommendation service is unavailable; try again",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the recommendation service took too long; try again",
    grpc.StatusCode.FAILED_PRECONDITION: "the recommendation service is not ready; try again "
                                         "later",
}
GENERIC = "internal error"


def body(code: str, message: str, status: int,
         headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status,
                        headers=headers)


def _headers(exc: grpc.aio.AioRpcError) -> dict[str, str] | None:
    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
        return {"WWW-Authenticate": "Bearer"}
    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return {"Retry-After": str(max(1, math.ceil(retry_after(exc) or 1)))}
    return None


def for_rpc_error(exc: grpc.aio.AioRpcError) -> JSONResponse:
    """The HTTP answer for a failed gRPC call."""
    code = exc.code()
    status = _STATUS.get(code, 500)
    if status == 500:
        log.error("gRPC call failed", extra={"code": code.name, "details": exc.details()})
        return body("INTERNAL", GENERIC, 500)
    if code in _FIXED:
        log.warning("gateway unavailable", extra={"code": code.name, "details": exc.details()})
    return body(code.name, _FIXED.get(code) or exc.details() or code.name.lower(), status,
                _headers(exc))


def _field(location: tuple) -> str:
    parts = [str(p) for p in location[1:]] or [str(p) for p in location]
    return ".".join(parts)


def for_validation(exc: RequestValidationError) -> JSONResponse:
    """400 naming the first bad field, e.g. ``profile.age: Input should be ...``."""
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return body("INVALID_ARGUMENT", "body: not valid JSON", 400)
    where = _field(tuple(first.get("loc", ())))
    message = first.get("msg", "invalid request").removeprefix("Value error, ")
    return body("INVALID_ARGUMENT", f"{where}: {message}" if where else message, 400)


def for_http(exc: HTTPException) -> JSONResponse:
    try:
        code = http.HTTPStatus(exc.status_code).name
    except ValueError:
        code = "ERROR"
    return body(code, str(exc.detail), exc.status_code)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    async def rpc(_: Request, exc: Exception) -> JSONResponse:
        return for_rpc_error(exc)  # type: ignore[arg-type]

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        return for_validation(exc)  # type: ignore[arg-type]

    async def plain(_: Request, exc: Exception) -> JSONResponse:
        return for_http(exc)  # type: ignore[arg-type]

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return body("INTERNAL", GENERIC, 500)

    app.add_exception_handler(grpc.aio.AioRpcError, rpc)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, plain)
    app.add_exception_handler(Exception, unexpected)
