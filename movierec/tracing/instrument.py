"""OpenTelemetry's instrumentations on movierec's clients and servers, behind a sampling gate.

Imported only once tracing is on (:mod:`movierec.tracing`). The gRPC ones run inside
the one interceptor of our own channels and servers (:class:`ServerGate`,
:class:`ClientGate` tell it what to do), not as a global patch of grpc, so a library's
private channel (pymilvus' to Milvus) is left alone; redis and psycopg are instrumented
per client and per connection for the same reason. An interceptor layer of its own
cost ~25 us of CPU per hop and side even for calls that record nothing, hence no
separate tracing interceptor.

The instrumentations cost CPU on every call even when the trace is not sampled and
records nothing (about 0.2 ms per gRPC hop, measured in docs/tracing.md: 40 % more CPU
per user-id miss at a 10 % sampling rate). So each sits behind a gate that decides first
and calls it only for calls of a sampled trace:

- where a request enters (a gRPC server or the web facade called without a
  ``traceparent``) the gate draws the sampling decision (probability
  ``MOVIEREC_TRACE_SAMPLE``): a sampled request goes through OpenTelemetry's
  instrumentation, which opens the root span (:class:`EntrySampler` lets it); any other
  gets a fresh trace id and span id, unsampled, and no span;
- a call arriving with a ``traceparent`` follows its sampled flag: sampled, through the
  instrumentation; not sampled, the caller's context is only made current;
- a client call in a sampled trace goes through the instrumentation; in an unsampled
  one it only carries ``traceparent`` on (the sampled flag off, so every hop shares the
  trace id and the decision); outside any trace (background refreshes, probes) it is
  not traced at all;
- the web facade's HTTP spans are FastAPI's own (its native telemetry); the gate in front
  of the app draws the decision for a new API request (:class:`AsgiEntryGate`);
- Redis commands and SQL queries are instrumented only inside sampled traces, and any
  span started outside a trace is dropped (:class:`EntrySampler`).
"""

from __future__ import annotations

import contextlib
import contextvars
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

#: Not traced: probes (every few seconds, from every caller) and reflection.
UNTRACED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
TRACEPARENT = "traceparent"
_OFF = contextlib.nullcontext()
#: W3C trace context alone (the global propagator adds baggage, which we do not use).
_W3C = TraceContextTextMapPropagator()
#: Set while a request the entry gate chose to record runs (its root span may start).
_entry: contextvars.ContextVar[bool] = contextvars.ContextVar("movierec_trace_entry",
                                                             default=False)


class EntrySampler(Sampler):
    """Root sampler: a new trace is recorded only for a request the entry gate chose
    (the rest is ``ParentBased``: a span follows its parent's decision)."""

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None,
                      links=None, trace_state=None) -> SamplingResult:
        if _entry.get():
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "MovierecEntrySampler"


@contextlib.contextmanager
def entry() -> Iterator[None]:
    """Within the block, a span without a parent starts a recorded trace."""
    token = _entry.set(True)
    try:
        yield
    finally:
        _entry.reset(token)


def _traced(details: Any) -> bool:
    """Whether a call (server or client details) is traced at all, by its method name
    (the library's ``filters.health_check()`` spends ~25 us a call in ``isinstance``
    checks against typing protocols)."""
    method = details.method
    if isinstance(method, bytes):
        method = method.decode()
    return not method.startswith(UNTRACED)


def sampled() -> bool:
    """Whether the current span belongs to a sampled trace."""
    return trace.get_current_span().get_span_context().trace_flags.sampled


def trace_id() -> str:
    """The current span's trace id (32 hex digits), "" outside a valid span."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else ""


def span(tracer: Any, name: str, attributes: dict[str, Any] | None
         ) -> contextlib.AbstractContextManager:
    """A child span of the current one in a sampled trace, else a null context."""
    if not sampled():
        return _OFF
    return tracer.start_as_current_span(name, attributes=attributes)


def _parent(pairs: Iterable[tuple[Any, Any]] | None) -> str | None:
    """The ``traceparent`` value among metadata or header pairs (str), if any."""
    for key, value in pairs or ():
        if key in (TRACEPARENT, b"traceparent"):
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def _sampled_flag(parent: str) -> bool:
    """The sampled flag of a well-formed W3C ``traceparent`` (malformed: False)."""
    return len(parent) == 55 and parent[-1] in "13579bdf"


def _unsampled_context(parent: str | None) -> otel_context.Context:
    """The caller's (unsampled) context, or a new unsampled trace of this request."""
    if parent is not None:
        found = _W3C.extract({TRACEPARENT: parent})
        if trace.get_current_span(found).get_span_context().is_valid:
            return found
    ids = SpanContext(random.getrandbits(128) or 1, random.getrandbits(64) or 1,
                      is_remote=False, trace_flags=TraceFlags(0))
    return trace.set_span_in_context(NonRecordingSpan(ids))


def _gate(parent: str | None, ratio: float) -> str:
    """How a request is served: "traced" (sampled caller), "entry" (a new trace this
    gate chose to record) or "plain" (an unsampled trace, no spans)."""
    if parent is not None and _sampled_flag(parent):
        return "traced"
    if parent is None and random.random() < ratio:
        return "entry"
    return "plain"


def _entering(behaviour: Callable) -> Callable:
    async def run(request: Any, servicer_context: Any) -> Any:
        with entry():
            return await behaviour(request, servicer_context)
    return run


def _rewrap(handler: Any, wrap: Callable[[Callable], Callable]) -> Any:
    """``handler`` with its unary-unary behaviour wrapped (other kinds unchanged)."""
    if handler is None or handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        wrap(handler.unary_unary), request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


class ServerGate:
    """OpenTelemetry's server interceptor, for the calls of sampled traces only.

    Not an interceptor of its own: the server's one interceptor
    (:class:`movierec.server.interceptor.ServiceInterceptor`) asks it how to find each
    call's handler, so an unsampled call pays no extra interceptor layer or wrapper
    (each cost ~25 us of CPU a hop, measured in docs/tracing.md).
    """

    #: make a context current (the token :attr:`detach` takes), and undo it
    attach = staticmethod(otel_context.attach)
    detach = staticmethod(otel_context.detach)

    def __init__(self, ratio: float) -> None:
        self.traced = aio_server_interceptor(filter_=_traced)
        self.ratio = ratio

    def route(self, details: Any) -> tuple[str, otel_context.Context | None]:
        """How a call is served: "traced" or "entry" (a recorded trace: through
        :meth:`intercept`), or "plain" with the context its behaviour runs in (an
        unrecorded trace), or "untraced" (probes, reflection) with none."""
        if not _traced(details):
            return "untraced", None
        parent = _parent(details.invocation_metadata)
        how = _gate(parent, self.ratio)
        return how, _unsampled_context(parent) if how == "plain" else None

    async def intercept(self, how: str, continuation: Callable, details: Any) -> Any:
        """The handler of a recorded call, through OpenTelemetry's interceptor (whose
        SERVER span encloses ``continuation``'s handler); a new trace's is let start."""
        handler = await self.traced.intercept_service(continuation, details)
        return _rewrap(handler, _entering) if how == "entry" else handler


class ClientGate:
    """OpenTelemetry's client interceptor inside a sampled trace; inside an unsampled
    one only ``traceparent`` is sent; outside any trace nothing is added.

    Not an interceptor of its own: the channel's one interceptor
    (:mod:`movierec.server.client`) asks it what an outbound call needs.
    """

    def __init__(self) -> None:
        [self.traced] = [i for i in aio_client_interceptors(filter_=_traced)
                         if isinstance(i, grpc.aio.UnaryUnaryClientInterceptor)]

    def outbound(self, details: Any) -> tuple[bool, tuple[tuple[str, str], ...]]:
        """Whether the call goes through the instrumentation (a sampled trace), and the
        metadata to add otherwise (the unsampled trace's ``traceparent``, or none)."""
        span_context = trace.get_current_span().get_span_context()
        if span_context.trace_flags.sampled and _traced(details):
            return True, ()
        if not span_context.is_valid:
            return False, ()
        return False, ((TRACEPARENT, f"00-{span_context.trace_id:032x}-"
                                     f"{span_context.span_id:016x}-"
                                     f"{int(span_context.trace_flags):02x}"),)


def redis_client(client: Any) -> None:
    """Trace every command (scripts included) of one redis-py asyncio client that runs
    in a sampled trace."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    plain = client.execute_command
    RedisInstrumentor.instrument_client(client)
    traced = client.execute_command

    async def execute_command(*args: Any, **options: Any) -> Any:
        return await (traced if sampled() else plain)(*args, **options)
    client.execute_command = execute_command


async def psycopg_connection(connection: Any) -> None:
    """psycopg-pool ``configure`` hook: trace every query of this connection that runs
    in a sampled trace."""
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    plain = connection.cursor_factory
    PsycopgInstrumentor.instrument_connection(connection)
    traced = connection.cursor_factory

    def cursor(*args: Any, **options: Any) -> Any:
        return (traced if sampled() else plain)(*args, **options)
    connection.cursor_factory = cursor


class AsgiEntryGate:
    """In front of an ASGI app with its own OpenTelemetry instrumentation (FastAPI's
    native telemetry: a SERVER span per request, continuing a ``traceparent`` header):
    a new trace of an API request is recorded with probability ``ratio``. Other
    requests (the page, static files, the health probe, unsampled callers) still get a
    trace id from the app's unrecorded span, so the request id is always one."""

    def __init__(self, app: Any, ratio: float) -> None:
        self.app = app
        self.ratio = ratio

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self._new_api_trace(scope) \
                and _gate(None, self.ratio) == "entry":
            with entry():
                return await self.app(scope, receive, send)
        return await self.app(scope, receive, send)

    @staticmethod
    def _new_api_trace(scope: dict) -> bool:
        path = scope.get("path", "")
        return (path.startswith("/api/") and path != "/api/health"
                and _parent(scope.get("headers")) is None)
