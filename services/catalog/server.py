"""The catalog service process: settings, server factory and background upkeep.

``create_server`` starts serving at once with health NOT_SERVING; a background probe
applies the migrations as soon as PostgreSQL answers and only then reports SERVING,
and afterwards follows the database (a failed ping of the primary, or of the read
replica when ``CATALOG_READ_DATABASE_URL`` names one, turns it NOT_SERVING until the
database is back) and refreshes ListPopular's counts on schedule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from movierec import settings
from movierec.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from movierec.registry import CATALOG
from movierec.server.factory import (
    ManagedServer,
    ServiceSpec,
    build_server,
    follow_health,
    start_task,
)
from movierec.server.runner import serve_main
from movierec.services.catalog.migrate import migrate
from movierec.services.catalog.servicer import CatalogServicer
from movierec.services.catalog.store import CatalogStore

log = logging.getLogger(__name__)
SERVICE = catalog_pb2.DESCRIPTOR.services_by_name["Catalog"].full_name


@dataclass(frozen=True)
class CatalogSettings:
    database_url: str = settings.setting("DATABASE_URL", "", secret=True,
                                         doc="PostgreSQL URL (required by the catalog)")
    read_database_url: str = settings.setting(
        "CATALOG_READ_DATABASE_URL", "", secret=True,
        doc="PostgreSQL read replica(s) for the reads that may lag the primary: "
            "SearchMovies, ListGenres, ListPopular, ListMovies (empty: the primary serves "
            "every read; docs/scale-serving.md)")
    port: int = settings.port(CATALOG)
    metrics_port: int = settings.metrics_port(CATALOG)
    pool_min: int = settings.setting("CATALOG_POOL_MIN", 2, minimum=1, maximum=100,
                                     doc="smallest PostgreSQL connection pool")
    pool_max: int = settings.setting("CATALOG_POOL_MAX", 10, minimum=1, maximum=200,
                                     doc="largest PostgreSQL connection pool")
    statement_timeout_ms: int = settings.setting(
        "CATALOG_STATEMENT_TIMEOUT_MS", 2000, minimum=10, maximum=600_000,
        doc="PostgreSQL statement_timeout for every query")
    call_timeout: float = settings.setting("CATALOG_CALL_TIMEOUT", 2.0, minimum=0.01,
                                           maximum=60, doc="longest database time per call (s)")
    refresh_seconds: float = settings.setting(
        "CATALOG_POPULARITY_REFRESH_SECONDS", 300.0, minimum=0, maximum=86_400,
        doc="how often ListPopular's counts are recomputed (0 = only after loads)")
    health_interval: float = settings.setting(
        "CATALOG_HEALTH_INTERVAL", 2.0, minimum=0.1, maximum=60,
        doc="seconds between database pings that drive the health status")


class _Readiness:
    """Health probe of the catalog: migrations once, then a database ping."""

    def __init__(self, store: CatalogStore, config: CatalogSettings) -> None:
        self.store = store
        self.config = config
        self.migrated = False

    async def __call__(self) -> bool:
        if not self.migrated:
            async with self.store.connection(5) as conn:
                applied = await migrate(conn)
            log.info("catalog ready", extra={"migrations_applied": applied})
            self.migrated = True
        await self.store.ping(timeout=self.config.health_interval)
        return True


async def refresh_popularity(store: CatalogStore, interval: float) -> None:
    """Forever: recompute ListPopular's counts every ``interval`` seconds (one replica at a
    time, see :meth:`CatalogStore.refresh_popularity`); never part of a probe."""
    while True:
        await asyncio.sleep(interval)
        try:
            done = await store.refresh_popularity()
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("popularity refresh failed: %s", type(exc).__name__)
            continue
        log.info("popularity refreshed" if done else "popularity refresh running elsewhere")


async def create_server(config: CatalogSettings, port: int = 0) -> tuple[ManagedServer, int]:
    """Serve the catalog on ``port``; health turns SERVING once the database is ready."""
    if not config.database_url:
        raise settings.SettingsError("DATABASE_URL is required by the catalog service")
    store = CatalogStore(config.database_url, min_size=config.pool_min,
                         max_size=config.pool_max,
                         statement_timeout_ms=config.statement_timeout_ms,
                         read_url=config.read_database_url)
    servicer = CatalogServicer(store, config.call_timeout)
    spec = ServiceSpec(SERVICE, servicer, catalog_pb2_grpc.add_CatalogServicer_to_server)
    server, bound = await build_server("catalog", [spec], port,
                                       settings.server_settings())
    await store.open()
    server.on_stop(store.close)
    start_task(server, follow_health(server, _Readiness(store, config),
                                     config.health_interval, "database"))
    if config.refresh_seconds:
        start_task(server, refresh_popularity(store, config.refresh_seconds))
    return server, bound


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main("catalog", CatalogSettings, create_server, argv or [])
