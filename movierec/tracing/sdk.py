"""The OpenTelemetry SDK of one process: resource, sampler, exporters.

``install`` sets the global tracer provider (W3C trace context is OpenTelemetry's
default propagator; ``ParentBased`` sampling whose roots the entry gates of
:mod:`movierec.tracing.instrument` decide) and returns movierec's tracer. Spans are
exported in batches off the event loop: to the OTLP/gRPC collector at
``MOVIEREC_TRACE_ENDPOINT`` and/or appended to ``MOVIEREC_TRACE_FILE`` (a second or so
after they end, so that a local reader sees them soon). The provider flushes and shuts
down at process exit. ``OTEL_RESOURCE_ATTRIBUTES`` (a pod's name, say) and
``OTEL_BSP_*`` apply as usual.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased

from movierec.settings import ServerSettings
from movierec.tracing.instrument import EntrySampler

#: How soon (ms) a finished span reaches the local trace file.
FILE_DELAY_MS = 1000


def processors(settings: ServerSettings) -> list[BatchSpanProcessor]:
    """One batch processor per configured destination."""
    out = []
    if settings.trace_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter: SpanExporter = OTLPSpanExporter(endpoint=settings.trace_endpoint)
        out.append(BatchSpanProcessor(exporter))
    if settings.trace_file:
        from movierec.tracing.jsonl import JsonLinesExporter

        out.append(BatchSpanProcessor(JsonLinesExporter(settings.trace_file),
                                      schedule_delay_millis=FILE_DELAY_MS))
    return out


def provider(service: str, settings: ServerSettings) -> TracerProvider:
    """A tracer provider for process ``service`` exporting where ``settings`` say."""
    resource = Resource.create({"service.name": service, "service.namespace": "movierec"})
    # Which new traces are recorded (MOVIEREC_TRACE_SAMPLE) is drawn by the gates of
    # movierec.tracing.instrument where a request enters; every other span follows its
    # parent.
    made = TracerProvider(resource=resource, sampler=ParentBased(EntrySampler()))
    for processor in processors(settings):
        made.add_span_processor(processor)
    return made


def install(service: str, settings: ServerSettings) -> Any:
    """Make the provider of ``service`` this process' global one; its tracer."""
    made = provider(service, settings)
    trace.set_tracer_provider(made)
    return made.get_tracer("movierec")
