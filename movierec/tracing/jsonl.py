"""A span exporter writing finished spans to a file as JSON lines, one span a line.

The file is opened for appending (``O_APPEND``) and each batch goes out in one
``write``, so the processes of one stack may share a file (``make run`` with
``MOVIEREC_TRACE_FILE``): lines of different processes never interleave within a line.
A line holds what ``movierec trace waterfall`` (:mod:`movierec.tracing.waterfall`)
and a reader need: ids, parent, service, name, kind, start and end (ns), status and
attributes.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import format_span_id, format_trace_id


def record(span: ReadableSpan) -> dict[str, Any]:
    """One finished span as a JSON-ready dict."""
    context, parent = span.get_span_context(), span.parent
    return {"trace_id": format_trace_id(context.trace_id),
            "span_id": format_span_id(context.span_id),
            "parent_id": format_span_id(parent.span_id) if parent else None,
            "service": span.resource.attributes.get("service.name", ""),
            "name": span.name, "kind": span.kind.name,
            "start_ns": span.start_time, "end_ns": span.end_time,
            "status": span.status.status_code.name,
            "attributes": dict(span.attributes or {})}


class JsonLinesExporter(SpanExporter):
    """Appends each exported batch of spans to ``path`` in one write."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = "".join(json.dumps(record(s), default=str) + "\n" for s in spans).encode()
        with self._lock:
            if self._fd is None:
                return SpanExportResult.FAILURE
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
