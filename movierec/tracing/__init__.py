"""OpenTelemetry tracing of every hop, off unless the settings turn it on (docs/tracing.md).

``setup(service, server_settings)`` runs once per process (:mod:`movierec.server.runner`).
With neither ``MOVIEREC_TRACE_ENDPOINT`` nor ``MOVIEREC_TRACE_FILE`` set it installs
nothing and imports nothing from OpenTelemetry: every helper below is then a constant
answer (no interceptor, a reusable null context, an empty trace id). With one of them
set it installs the SDK (:mod:`movierec.tracing.sdk`: the OTLP/gRPC exporter, the JSON
lines file exporter, ``ParentBased(TraceIdRatioBased(MOVIEREC_TRACE_SAMPLE))``), and:

- gRPC servers and channels run OpenTelemetry's aio interceptors (W3C ``traceparent``
  in the metadata of every hop; health checks and reflection are not traced) through
  their one interceptor of our own, which asks a gate (:func:`server_gate`,
  :func:`client_gate`);
- the gateway's Redis client and the catalog's PostgreSQL connections are instrumented
  by OpenTelemetry's redis and psycopg instrumentations, one span per command and query;
- the web facade's spans are FastAPI's own (its native telemetry), a gate in front;
- each instrumentation runs only for requests of a sampled trace: a gate in front of it
  draws the decision where a request enters and passes it on (:mod:`.instrument`);
- :func:`span` opens the spans no library has an instrumentation for (the embedder's
  model call, the retriever's Milvus search);
- the request id in the logs is the trace id (:func:`current_trace_id`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from movierec.settings import ServerSettings

#: The tracer of this process once :func:`setup` turned tracing on, else None.
_tracer: Any = None
#: The share of new requests recorded (``MOVIEREC_TRACE_SAMPLE``).
_ratio: float = 1.0
_OFF = contextlib.nullcontext()


def setup(service: str, settings: ServerSettings) -> bool:
    """Install tracing for process ``service`` when ``settings`` ask for it (once per
    process); whether tracing is on."""
    global _tracer, _ratio
    if _tracer is None and settings.tracing:
        from movierec.tracing import sdk

        _tracer = sdk.install(service, settings)
        _ratio = settings.trace_sample
    return _tracer is not None


def active() -> bool:
    """Whether this process records traces."""
    return _tracer is not None


def span(name: str, attributes: dict[str, Any] | None = None
         ) -> contextlib.AbstractContextManager:
    """A child span of the current one around a block, in a sampled trace (else, and
    when off, a null context)."""
    if _tracer is None:
        return _OFF
    from movierec.tracing import instrument

    return instrument.span(_tracer, name, attributes)


def current_trace_id() -> str:
    """The current span's trace id as 32 hex digits; "" when off or outside a trace."""
    if _tracer is None:
        return ""
    from movierec.tracing import instrument

    return instrument.trace_id()


def server_gate() -> Any:
    """What a gRPC server's interceptor asks how to find each call's handler (an
    :class:`~movierec.tracing.instrument.ServerGate`); None when off."""
    if _tracer is None:
        return None
    from movierec.tracing import instrument

    return instrument.ServerGate(_ratio)


def client_gate() -> Any:
    """What a channel's interceptor asks what each outbound call needs (an
    :class:`~movierec.tracing.instrument.ClientGate`); None when off."""
    if _tracer is None:
        return None
    from movierec.tracing import instrument

    return instrument.ClientGate()


def instrument_redis(client: Any) -> None:
    """Trace every command of the redis-py ``client`` (nothing when off)."""
    if _tracer is not None:
        from movierec.tracing import instrument

        instrument.redis_client(client)


def psycopg_configure() -> Callable[[Any], Any] | None:
    """A psycopg-pool ``configure`` hook tracing each query of a new connection (None
    when off)."""
    if _tracer is None:
        return None
    from movierec.tracing import instrument

    return instrument.psycopg_connection


def asgi_gate(app: Any) -> Any:
    """``app`` (a FastAPI app, whose native telemetry makes the HTTP spans) behind the
    gate that starts its sampled traces; ``app`` itself when off."""
    if _tracer is None:
        return app
    from movierec.tracing import instrument

    return instrument.AsgiEntryGate(app, _ratio)
