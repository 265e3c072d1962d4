"""Outbound gRPC: channels that forward the request id, deadlines and safe retries.

Every outbound call goes through :func:`call` with a deadline. Only calls marked
idempotent are retried, only on UNAVAILABLE, with exponential backoff, and never
past the caller's deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import grpc

from movierec.logs import request_id
from movierec.server import metrics
from movierec.server.interceptor import REQUEST_ID_KEY


class _RequestIdInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        rid = request_id.get()
        if rid:
            metadata = list(client_call_details.metadata or ())
            metadata.append((REQUEST_ID_KEY, rid))
            client_call_details = client_call_details._replace(metadata=metadata)
        return await continuation(client_call_details, request)


def channel(target: str, max_message_bytes: int = 4 * 1024 * 1024) -> grpc.aio.Channel:
    """An insecure channel to ``target`` that forwards the current request id."""
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes),
               ("grpc.keepalive_time_ms", 30_000),
               ("grpc.enable_retries", 0),
               # Kubernetes services are headless: spread calls over every replica.
               ("grpc.lb_policy_name", "round_robin"),
               # A restarted peer is found again within about a second, not minutes.
               ("grpc.initial_reconnect_backoff_ms", 100),
               ("grpc.min_reconnect_backoff_ms", 100),
               ("grpc.max_reconnect_backoff_ms", 1000)]
    return grpc.aio.insecure_channel(target, options=options,
                                     interceptors=[_RequestIdInterceptor()])


async def call(method: Any, request: Any, *, timeout: float, target: str = "",
               idempotent: bool = False, attempts: int = 3, backoff: float = 0.02) -> Any:
    """Invoke ``method(request)`` with a deadline; retry idempotent calls on UNAVAILABLE."""
    deadline = time.monotonic() + timeout
    name = getattr(method, "_method", b"")
    label = name.decode().rsplit("/", 1)[-1] if isinstance(name, bytes) else str(name)
    for attempt in range(1, attempts + 1):
        remaining = deadline - time.monotonic()
        start = time.perf_counter()
        try:
            response = await method(request, timeout=max(remaining, 0.001))
        except grpc.aio.AioRpcError as exc:
            metrics.CLIENT_LATENCY.labels(target, label, exc.code().name).observe(
                time.perf_counter() - start)
            pause = backoff * (2 ** (attempt - 1)) * (0.5 + random.random())
            retry = (idempotent and attempt < attempts
                     and exc.code() == grpc.StatusCode.UNAVAILABLE
                     and deadline - time.monotonic() > pause)
            if not retry:
                raise
            await asyncio.sleep(pause)
            continue
        metrics.CLIENT_LATENCY.labels(target, label, "OK").observe(time.perf_counter() - start)
        return response
    raise AssertionError("unreachable")  # pragma: no cover
