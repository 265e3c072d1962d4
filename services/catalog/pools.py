"""The catalog's PostgreSQL connection pools in Prometheus, read at scrape time.

psycopg_pool keeps its own statistics (``pool.get_stats()``); :class:`PoolCollector`
turns them into metric families whenever ``/metrics`` is scraped, labelled ``pool``
(``primary``; ``replica`` when ``CATALOG_READ_DATABASE_URL`` is set), so nothing is
counted twice and the serving path pays nothing. Saturation reads as: ``size`` at
``max``, ``available`` at 0 and ``requests_waiting`` above 0; the counters say how
often a call had to wait for a connection, for how long in all, and how often it gave
up (``CATALOG_CALL_TIMEOUT`` spent waiting: the call answered UNAVAILABLE).

Several stores in one process (tests) add up under their label.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool


def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
    """Each pool statistic's metric family, by its psycopg_pool name."""
    return {
        "pool_size": GaugeMetricFamily(
            "movierec_catalog_pool_size",
            "PostgreSQL connections the catalog's pool holds open (in use or idle)",
            labels=["pool"]),
        "pool_available": GaugeMetricFamily(
            "movierec_catalog_pool_available",
            "Idle PostgreSQL connections in the catalog's pool", labels=["pool"]),
        "pool_max": GaugeMetricFamily(
            "movierec_catalog_pool_max",
            "Largest size of the catalog's pool (CATALOG_POOL_MAX)", labels=["pool"]),
        "requests_waiting": GaugeMetricFamily(
            "movierec_catalog_pool_requests_waiting",
            "Calls waiting now for a connection of the catalog's pool", labels=["pool"]),
        "requests_num": CounterMetricFamily(
            "movierec_catalog_pool_requests_total",
            "Connections asked of the catalog's pool", labels=["pool"]),
        "requests_queued": CounterMetricFamily(
            "movierec_catalog_pool_requests_queued_total",
            "Connection requests that had to wait (no idle connection)", labels=["pool"]),
        "requests_wait_ms": CounterMetricFamily(
            "movierec_catalog_pool_wait_seconds_total",
            "Time connection requests spent waiting for a connection", labels=["pool"]),
        "requests_errors": CounterMetricFamily(
            "movierec_catalog_pool_request_errors_total",
            "Connection requests that failed (timed out waiting)", labels=["pool"]),
        "usage_ms": CounterMetricFamily(
            "movierec_catalog_pool_usage_seconds_total",
            "Time connections were lent out (its rate: connections in use on average)",
            labels=["pool"]),
        "connections_errors": CounterMetricFamily(
            "movierec_catalog_pool_connection_errors_total",
            "Failed attempts to open a PostgreSQL connection", labels=["pool"]),
        "connections_lost": CounterMetricFamily(
            "movierec_catalog_pool_connections_lost_total",
            "Connections found broken and discarded", labels=["pool"]),
    }


#: psycopg_pool counts these in milliseconds; Prometheus wants seconds.
_MILLISECONDS = {"requests_wait_ms", "usage_ms"}


def stats(pool: AsyncConnectionPool) -> dict[str, int]:
    """``pool.get_stats()``, read from another thread (a scrape) than the pool's loop:
    its counters are a dict that may gain a key meanwhile, so a failed copy is retried."""
    for _ in range(5):
        try:
            return pool.get_stats()
        except RuntimeError:   # "dictionary changed size during iteration"
            continue
    return {}


class PoolCollector(Collector):
    """The pools the catalog's stores have open, by label."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[int, tuple[str, AsyncConnectionPool]] = {}

    def track(self, name: str, pool: AsyncConnectionPool) -> None:
        with self._lock:
            self._pools[id(pool)] = (name, pool)

    def forget(self, pool: AsyncConnectionPool) -> None:
        with self._lock:
            self._pools.pop(id(pool), None)

    def describe(self) -> Iterator:
        return iter(_families().values())

    def collect(self) -> Iterator:
        with self._lock:
            pools = list(self._pools.values())
        totals: dict[str, dict[str, float]] = {}
        for name, pool in pools:
            summed = totals.setdefault(name, {})
            for key, value in stats(pool).items():
                summed[key] = summed.get(key, 0) + value
        families = _families()
        for name, summed in sorted(totals.items()):
            for key, family in families.items():
                value = summed.get(key, 0)
                family.add_metric([name], value / 1000 if key in _MILLISECONDS else value)
        return iter(families.values())


POOLS = PoolCollector()
prometheus_client.REGISTRY.register(POOLS)
