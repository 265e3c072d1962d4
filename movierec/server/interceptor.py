"""Server interceptor: request ids, admission, JSON access logs, metrics and error mapping.

The request id of a call is its trace id when tracing is on (:mod:`movierec.tracing`),
else the caller's ``x-request-id``, else a fresh one.

Every unary-unary handler is wrapped so that an exception it raises becomes the status
chosen by :func:`movierec.server.status.status_for`, and its latency and code are
recorded. A process may pass an ``admit`` hook (the gateway's authentication and rate
limit): it sees every unary call with its request before the handler does and refuses
one by raising, through the same mapping; a RESOURCE_EXHAUSTED answer carries
``google.rpc.RetryInfo`` (:mod:`movierec.server.retry_info`). Streaming handlers
(health ``Watch``, reflection) pass through untouched.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from movierec import tracing
from movierec.errors import ResourceExhausted
from movierec.logs import request_id
from movierec.server import metrics, retry_info
from movierec.server.client import REQUEST_ID_KEY, RETRIED_KEY, budget_for, retry_budget
from movierec.server.metadata import first
from movierec.server.status import status_for

log = logging.getLogger("movierec.rpc")
#: ``admit(full method name, request, context)``: raise to refuse the call.
Admit = Callable[[str, Any, grpc.aio.ServicerContext], Awaitable[None]]


def _incoming_request_id(context: grpc.aio.ServicerContext) -> str:
    """The trace id when tracing is on (the tracing interceptor, first, made the call's
    trace current), else the caller's ``x-request-id``, else a fresh id."""
    return (tracing.current_trace_id()
            or first(context.invocation_metadata(), REQUEST_ID_KEY)[:64]
            or uuid.uuid4().hex[:16])


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps unary handlers of one service process (the server's one interceptor).

    With tracing on, the tracing gate (:func:`movierec.tracing.server_gate`) finds the
    handler: a call of a recorded trace goes through OpenTelemetry's interceptor, whose
    span encloses this wrapper (so the request id is the trace id); any other call's
    wrapper makes its unrecorded trace current.
    """

    def __init__(self, service: str, admit: Admit | None = None) -> None:
        self.service = service
        self.admit = admit
        self.gate = tracing.server_gate()

    async def intercept_service(self, continuation, handler_call_details):
        if self.gate is None:
            return self._wrapped(await continuation(handler_call_details),
                                 handler_call_details, None)
        how, trace_context = self.gate.route(handler_call_details)
        if how in ("plain", "untraced"):
            return self._wrapped(await continuation(handler_call_details),
                                 handler_call_details, trace_context)

        async def ours(details):
            return self._wrapped(await continuation(details), details, None)
        return await self.gate.intercept(how, ours, handler_call_details)

    def _wrapped(self, handler, details, trace_context):
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(handler.unary_unary, method, details.method, trace_context),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _wrap(self, behaviour, method: str, full_method: str, trace_context=None):
        admit = self.admit
        gate = self.gate

        async def wrapped(request, context: grpc.aio.ServicerContext):
            trace_token = None if trace_context is None else gate.attach(trace_context)
            token = request_id.set(_incoming_request_id(context))
            budget = budget_for(context.invocation_metadata())
            budget_token = retry_budget.set(budget)
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                if admit is not None:
                    await admit(full_method, request, context)
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
                code, message = status_for(exc)
                trailers = ((RETRIED_KEY, "1"),) if budget.retried else ()
                if isinstance(exc, ResourceExhausted):
                    trailers += retry_info.trailers(message, exc.retry_after)
                await context.abort(code, message, trailing_metadata=trailers)
            finally:
                self._record(method, code, time.perf_counter() - start)
                retry_budget.reset(budget_token)
                request_id.reset(token)
                if trace_token is not None:
                    gate.detach(trace_token)
        return wrapped

    def _record(self, method: str, code, seconds: float) -> None:
        name = code.name if hasattr(code, "name") else str(code)
        metrics.RPC_LATENCY.labels(self.service, method, name).observe(seconds)
        metrics.RPC_TOTAL.labels(self.service, method, name).inc()
        level = logging.DEBUG if name == "OK" else logging.WARNING
        if log.isEnabledFor(level):
            log.log(level, "rpc", extra={"method": method, "code": name,
                                         "ms": round(seconds * 1000, 3)})
