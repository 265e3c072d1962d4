"""The gateway process: settings and server factory.

Health is SERVING once the three backends answer their health checks; it does not
depend on Redis, since the gateway answers uncached without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from grpc_health.v1 import health_pb2, health_pb2_grpc

from movierec import settings
from movierec.apps.gateway.backends import Backends, ModelVersions
from movierec.apps.gateway.cache import Cache
from movierec.apps.gateway.servicer import GatewayServicer
from movierec.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from movierec.registry import CATALOG, EMBEDDER, GATEWAY, RETRIEVER
from movierec.server.factory import (
    ManagedServer,
    ServiceSpec,
    build_server,
    follow_health,
    start_task,
)
from movierec.server.runner import serve_main

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name


@dataclass(frozen=True)
class GatewaySettings:
    port: int = settings.port(GATEWAY)
    metrics_port: int = settings.metrics_port(GATEWAY)
    embedder_addr: str = settings.address(EMBEDDER)
    retriever_addr: str = settings.address(RETRIEVER)
    catalog_addr: str = settings.address(CATALOG)
    redis_url: str = settings.setting("REDIS_URL", "", secret=True,
                                      doc="Redis URL of the answer cache (empty: no cache)")
    cache_ttl: float = settings.setting("GATEWAY_CACHE_TTL", 300.0, minimum=1, maximum=86_400,
                                        doc="seconds a cached answer lives")
    call_timeout: float = settings.setting("GATEWAY_CALL_TIMEOUT", 1.0, minimum=0.01,
                                           maximum=60, doc="deadline of each downstream call (s)")
    redis_timeout: float = settings.setting("GATEWAY_REDIS_TIMEOUT", 0.05, minimum=0.001,
                                            maximum=10, doc="Redis socket timeout (s)")


async def _backends_ready(backends: Backends) -> bool:
    async def check(channel) -> bool:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    results = await asyncio.gather(*(check(c) for c in backends.channels),
                                   return_exceptions=True)
    return all(r is True for r in results)


class _Readiness:
    """SERVING once the backends are; afterwards as long as it can answer at all: the
    backends are up, or Redis holds answers it can serve while they are not."""

    def __init__(self, backends: Backends, cache: Cache) -> None:
        self.backends = backends
        self.cache = cache
        self.started = False

    async def __call__(self) -> bool:
        if await _backends_ready(self.backends):
            self.started = True
            return True
        return self.started and await self.cache.reachable()


async def create_server(config: GatewaySettings, port: int = 0) -> tuple[ManagedServer, int]:
    """Serve the gateway on ``port``; SERVING once embedder, retriever and catalog are."""
    backends = Backends(config.embedder_addr, config.retriever_addr, config.catalog_addr)
    cache = Cache(config.redis_url, config.cache_ttl, config.redis_timeout)
    versions = ModelVersions(backends, interval=5.0)
    servicer = GatewayServicer(backends, cache, versions, config.call_timeout)
    spec = ServiceSpec(SERVICE, servicer, gateway_pb2_grpc.add_GatewayServicer_to_server)
    server, bound = await build_server("gateway", [spec], port,
                                       settings.load(settings.ServerSettings))
    server.on_stop(backends.close)
    server.on_stop(cache.close)
    start_task(server, versions.run())
    start_task(server, follow_health(server, _Readiness(backends, cache), 1.0, "backends",
                                     down_after=3))
    return server, bound


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main("gateway", GatewaySettings, create_server, argv or [])
