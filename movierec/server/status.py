"""The one place where exceptions become gRPC status codes.

Codes mean one thing: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
RESOURCE_EXHAUSTED, UNAUTHENTICATED and PERMISSION_DENIED are the caller's problem;
UNAVAILABLE (and DEADLINE_EXCEEDED) only what a retry can fix; INTERNAL a bug, with a
generic message. Domain errors (:mod:`movierec.errors`) keep their message. A
``grpc.aio.AioRpcError`` from a downstream call keeps its code when it is one of the
above, with the downstream's (caller-safe) message for the caller's problems and a
generic one for UNAVAILABLE and DEADLINE_EXCEEDED (whose details name internal
addresses); a downstream INTERNAL, UNKNOWN or anything else stays INTERNAL. An
unexpected exception is logged with its traceback and answered INTERNAL.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from movierec import errors

log = logging.getLogger(__name__)

_DOMAIN: list[tuple[type[Exception], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.DataError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
]
#: The caller's problems: passed on with the downstream's message.
CALLER_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                          grpc.StatusCode.FAILED_PRECONDITION,
                          grpc.StatusCode.RESOURCE_EXHAUSTED,
                          grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                          grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.ALREADY_EXISTS})
#: What a retry may fix: passed on with a generic message.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE: "a service this call needs is unavailable",
             grpc.StatusCode.DEADLINE_EXCEEDED: "deadline exceeded",
             grpc.StatusCode.CANCELLED: "a service this call needs is unavailable"}
GENERIC_INTERNAL = "internal error"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-safe message for an exception raised by a handler."""
    for kind, code in _DOMAIN:
        if isinstance(exc, kind):
            return code, str(exc)
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        if code in CALLER_CODES:
            return code, exc.details() or code.name.lower()
        if code in RETRYABLE:
            code = grpc.StatusCode.UNAVAILABLE if code == grpc.StatusCode.CANCELLED else code
            return code, RETRYABLE[code]
        log.error("downstream %s: %s", code.name, exc.details())
        return grpc.StatusCode.INTERNAL, GENERIC_INTERNAL
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"
    log.error("unhandled error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, GENERIC_INTERNAL
