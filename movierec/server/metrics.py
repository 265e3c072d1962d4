"""Prometheus metrics shared by every service: per-RPC latency and outcome counters.

Each process exposes them on its own HTTP port (``start``); services add their own
counters (cache hits, pool errors) to the same default registry.
"""

from __future__ import annotations

import contextlib

import prometheus_client

#: latency buckets of every movierec histogram (seconds; the SLO's 60 ms is a boundary)
BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.015, 0.03, 0.06, 0.125, 0.25, 0.5, 1, 2.5, 5)
RPC_LATENCY = prometheus_client.Histogram(
    "movierec_rpc_latency_seconds", "Server-side latency of unary RPCs",
    ["service", "method", "code"], buckets=BUCKETS)
RPC_TOTAL = prometheus_client.Counter(
    "movierec_rpc_total", "Unary RPCs handled, by status code", ["service", "method", "code"])
CLIENT_LATENCY = prometheus_client.Histogram(
    "movierec_client_latency_seconds", "Latency of outbound RPCs to other services",
    ["target", "method", "code"], buckets=BUCKETS)


MODEL_LIVE = prometheus_client.Gauge(
    "movierec_model_live_info", "The model version a service serves now (value 1)",
    ["service", "model", "version"])


SERVING = prometheus_client.Gauge(
    "movierec_serving", "1 while a gRPC service of the process reports SERVING on health",
    ["grpc_service"])


def live_version(service: str, model: str, version: str, before: str | None = None) -> None:
    """Show ``version`` as ``service``'s live ``model`` (and drop ``before``'s series)."""
    if before is not None and before != version:
        with contextlib.suppress(KeyError):
            MODEL_LIVE.remove(service, model, before)
    MODEL_LIVE.labels(service, model, version).set(1)


def start(port: int, host: str = "127.0.0.1") -> int:
    """Serve ``/metrics`` on ``port`` (0 picks a free one); return the bound port."""
    httpd, _thread = prometheus_client.start_http_server(port, addr=host)
    return int(httpd.server_port)
CLIENT_RETRIES = prometheus_client.Counter(
    "movierec_client_retries_total", "Outbound RPCs retried (at most one per request chain)",
    ["target", "method"])
