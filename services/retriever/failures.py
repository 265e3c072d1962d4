"""Milvus failures as the retriever's callers should see them.

UNAVAILABLE means "try again": only failures a retry can fix become
:class:`~movierec.errors.Unavailable` — the connection refused or lost, a deadline,
a server that is starting or overloaded, a collection still loading after a restart.
A missing collection or alias is :class:`~movierec.errors.FailedPrecondition` (the
vectors must be loaded first). Anything else is re-raised untouched, which the server's
interceptor logs and answers INTERNAL with a generic message: Milvus' own messages
(collection ids, expressions, addresses) never reach a caller.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from pymilvus import MilvusException

from movierec.errors import FailedPrecondition, MovierecError, Unavailable

#: Milvus (2.3+ ``merr``) codes a retry can fix: service not ready / unavailable /
#: rate limited, collection not loaded yet (it reloads after a restart), replica, channel
#: or node not available. pymilvus also uses 2 for "cannot connect".
RETRYABLE = {1, 2, 4, 101, 103, 401, 503, 601, 604}
MISSING = {100, 1600}  # collection not found, alias not found
RETRYABLE_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                  grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED}


def translate(exc: BaseException) -> BaseException:
    """The exception to raise instead of ``exc`` (``exc`` itself when it is unexpected)."""
    if isinstance(exc, MovierecError):
        return exc
    if isinstance(exc, TimeoutError):
        return Unavailable("vector index did not answer in time")
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        if exc.code() in RETRYABLE_GRPC:
            return Unavailable("vector index unavailable")
        return exc
    if isinstance(exc, MilvusException):
        if exc.code in RETRYABLE:
            return Unavailable("vector index unavailable")
        if exc.code in MISSING:
            return FailedPrecondition("a model's vector collection is missing; load its "
                                      "vectors again (movierec load vectors)")
    return exc


def is_missing(exc: BaseException) -> bool:
    """Whether ``exc`` says a collection or alias does not exist."""
    return isinstance(exc, MilvusException) and exc.code in MISSING


def reraise(exc: BaseException) -> NoReturn:
    """Raise :func:`translate`'s answer for ``exc`` (chained to it), or ``exc`` itself."""
    translated = translate(exc)
    if translated is exc:
        raise exc
    raise translated from exc
