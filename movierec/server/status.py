"""The one place where exceptions become gRPC status codes.

Domain errors (:mod:`movierec.errors`) keep their message; a ``grpc.aio.AioRpcError``
from a downstream call keeps UNAVAILABLE / DEADLINE_EXCEEDED / NOT_FOUND /
INVALID_ARGUMENT and turns anything else into UNAVAILABLE; an unexpected exception is
logged with its traceback and answered INTERNAL with a generic message.
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
]
_PASS_THROUGH = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                 grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT,
                 grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION}
GENERIC_INTERNAL = "internal error"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-safe message for an exception raised by a handler."""
    for kind, code in _DOMAIN:
        if isinstance(exc, kind):
            return code, str(exc)
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        if code in _PASS_THROUGH:
            return code, exc.details() or code.name.lower()
        return grpc.StatusCode.UNAVAILABLE, "a downstream service failed"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"
    log.error("unhandled error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, GENERIC_INTERNAL
