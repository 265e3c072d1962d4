"""RESOURCE_EXHAUSTED with retry info: ``google.rpc.RetryInfo`` in the status details.

A server that refuses a call for its rate sends the standard rich status (the
``grpc-status-details-bin`` trailer, as ``grpcio-status`` writes it) holding a
``RetryInfo`` with the delay after which a retry can succeed; gRPC clients in any
language read it with their status-details helpers, and :func:`retry_after` reads it
here (the web facade turns it into an HTTP ``Retry-After``).
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DETAILS_KEY = rpc_status.GRPC_DETAILS_METADATA_KEY


def trailers(message: str, seconds: float) -> tuple[tuple[str, bytes], ...]:
    """The status-details trailer of a RESOURCE_EXHAUSTED answer that may be retried
    after ``seconds``."""
    nanos = max(0, math.ceil(seconds * 1e9))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
        seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message,
                               details=[detail])
    return ((DETAILS_KEY, status.SerializeToString()),)


def retry_after(exc: grpc.aio.AioRpcError) -> float | None:
    """Seconds after which a refused call may be retried, from its RetryInfo; None
    when the error carries none."""
    for key, value in exc.trailing_metadata() or ():
        if key != DETAILS_KEY:
            continue
        for detail in status_pb2.Status.FromString(value).details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None
