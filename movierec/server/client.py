"""Outbound gRPC: channels that forward the request id, deadlines and one shared retry.

A channel is plaintext unless it is given TLS credentials
(:func:`movierec.security.tls.channel_credentials`, from the process' settings), and
its messages are limited by ``MOVIEREC_MAX_MESSAGE_BYTES`` as the servers' are.

Every outbound call goes through :func:`call` with a deadline. Only idempotent calls
are retried, only on UNAVAILABLE, with backoff, never past the caller's deadline, and
at most once per request chain: a retried call carries ``x-movierec-retry`` so the
server it reaches retries nothing downstream, and a server whose handler already
retried answers a failure with ``x-movierec-retried`` in its trailers so the caller does
not retry it again. Any RPC is therefore attempted at most twice end to end, however
many services the request crosses.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from dataclasses import dataclass
from typing import Any

import grpc

from movierec import settings, tracing
from movierec.logs import request_id
from movierec.server import metrics
from movierec.server.metadata import first

REQUEST_ID_KEY = "x-request-id"
RETRY_KEY = "x-movierec-retry"        # this call is a retry: retry nothing downstream
RETRIED_KEY = "x-movierec-retried"    # trailer: the handler already retried downstream


@dataclass
class RetryBudget:
    """One request chain's retry: spent by the first retry, or by an incoming retry.

    ``spent`` travels down (every outbound call of a spent chain is marked, so no
    server below retries); ``retried`` travels up (a failure answered after a retry
    here or below carries the trailer, so no caller above retries).
    """

    spent: bool = False
    retried: bool = False


retry_budget: contextvars.ContextVar[RetryBudget | None] = contextvars.ContextVar(
    "retry_budget", default=None)


def budget_for(metadata) -> RetryBudget:
    """The budget of a request that arrived with ``metadata``."""
    return RetryBudget(spent=bool(first(metadata, RETRY_KEY)))


def _retried_downstream(exc: grpc.aio.AioRpcError) -> bool:
    return bool(first(exc.trailing_metadata(), RETRIED_KEY))


class _OutboundInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """A channel's one interceptor: sends the request id on and, with tracing on, asks
    the tracing gate (:func:`movierec.tracing.client_gate`) whether the call goes
    through OpenTelemetry's instrumentation (a recorded trace) or only carries the
    unrecorded trace's ``traceparent``. A call that carries a ``traceparent`` sends no
    ``x-request-id``: with tracing on the request id is the trace id, which the callee
    reads from the trace context (one unique header less per hop: the floor of tracing's
    overhead fell from ~9 % to ~4 %, docs/tracing.md)."""

    def __init__(self) -> None:
        self.gate = tracing.client_gate()

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        rid = request_id.get()
        traced, extra = (False, ()) if self.gate is None else \
            self.gate.outbound(client_call_details)
        if rid and not (traced or extra):
            extra = ((REQUEST_ID_KEY, rid),)
        if extra:
            metadata = [*(client_call_details.metadata or ()), *extra]
            client_call_details = client_call_details._replace(metadata=metadata)
        if traced:
            return await self.gate.traced.intercept_unary_unary(
                continuation, client_call_details, request)
        return await continuation(client_call_details, request)


def _may_retry(exc: grpc.aio.AioRpcError, budget: RetryBudget) -> bool:
    if _retried_downstream(exc):
        budget.retried = True
        return False
    return exc.code() == grpc.StatusCode.UNAVAILABLE and not budget.spent


def channel(target: str, max_message_bytes: int | None = None,
            credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    """A channel to ``target`` (TLS with ``credentials``, else plaintext) that forwards
    the current request id (and, when tracing is on, the W3C trace context). Messages
    are limited like the servers' (the process' ``MOVIEREC_MAX_MESSAGE_BYTES``) unless
    ``max_message_bytes`` says otherwise."""
    if max_message_bytes is None:
        max_message_bytes = settings.server_settings().max_message_bytes
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
    interceptors = [_OutboundInterceptor()]
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=options,
                                       interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)


async def call(method: Any, request: Any, *, timeout: float, target: str = "",
               idempotent: bool = False, backoff: float = 0.02,
               metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    """Invoke ``method(request)`` with a deadline and ``metadata`` (credentials, the
    caller's address); an idempotent call that finds its target UNAVAILABLE is retried
    once if the request chain's retry is not spent."""
    deadline = time.monotonic() + timeout
    name = getattr(method, "_method", b"")
    label = name.decode().rsplit("/", 1)[-1] if isinstance(name, bytes) else str(name)
    budget = retry_budget.get() or RetryBudget()
    while True:
        sent = (*metadata, (RETRY_KEY, "1")) if budget.spent else metadata
        start = time.perf_counter()
        try:
            response = await method(request, timeout=max(deadline - time.monotonic(), 0.001),
                                    metadata=sent)
        except grpc.aio.AioRpcError as exc:
            metrics.CLIENT_LATENCY.labels(target, label, exc.code().name).observe(
                time.perf_counter() - start)
            pause = backoff * (0.5 + random.random())
            if not (idempotent and _may_retry(exc, budget)
                    and deadline - time.monotonic() > pause):
                raise
            budget.spent = budget.retried = True
            metrics.CLIENT_RETRIES.labels(target, label).inc()
            await asyncio.sleep(pause)
            continue
        metrics.CLIENT_LATENCY.labels(target, label, "OK").observe(time.perf_counter() - start)
        return response
