"""The gateway process: settings and server factory.

Health is SERVING once the three backends answer their health checks; it does not
depend on Redis, since the gateway answers uncached without it. Callers are checked
by :class:`~movierec.apps.gateway.guard.Guard` (tokens, rate limit); its backends are
reached over TLS when the process has TLS settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from grpc_health.v1 import health_pb2, health_pb2_grpc

from movierec import settings
from movierec.apps.gateway.backends import Backends, ModelVersions
from movierec.apps.gateway.cache import Cache, sentinel_addresses
from movierec.apps.gateway.guard import Guard, networks
from movierec.apps.gateway.movies import MovieSnapshot
from movierec.apps.gateway.ratelimit import RateLimiter
from movierec.apps.gateway.servicer import GatewayServicer, register
from movierec.gateway.v1 import gateway_pb2
from movierec.registry import CATALOG, EMBEDDER, GATEWAY, RETRIEVER
from movierec.security import tls, tokens
from movierec.server.factory import (
    ManagedServer,
    ServiceSpec,
    build_server,
    follow_health,
    start_task,
)
from movierec.server.runner import serve_main

log = logging.getLogger(__name__)
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
    redis_sentinels: str = settings.setting(
        "REDIS_SENTINELS", "",
        doc="host:port,host:port of Redis Sentinels: the cache's master is the one they "
            "name REDIS_SENTINEL_MASTER, followed through failovers (REDIS_URL then gives "
            "only the password, database and TLS; empty: REDIS_URL is the server)")
    redis_sentinel_master: str = settings.setting(
        "REDIS_SENTINEL_MASTER", "mymaster",
        doc="the master's name the sentinels monitor (with REDIS_SENTINELS)")
    redis_cluster: bool = settings.setting(
        "REDIS_CLUSTER", False,
        doc="REDIS_URL names a node of a Redis Cluster; redis-py's RedisCluster finds the "
            "others and follows slot moves")
    cache_ttl: float = settings.setting("GATEWAY_CACHE_TTL", 300.0, minimum=1, maximum=86_400,
                                        doc="seconds a cached answer lives")
    call_timeout: float = settings.setting("GATEWAY_CALL_TIMEOUT", 1.0, minimum=0.01,
                                           maximum=60, doc="deadline of each downstream call (s)")
    redis_timeout: float = settings.setting("GATEWAY_REDIS_TIMEOUT", 0.05, minimum=0.001,
                                            maximum=10, doc="Redis socket timeout (s)")
    auth_required: bool = settings.setting(
        "GATEWAY_AUTH_REQUIRED", False,
        doc="RecordRating and user-id recommendations need the user's token")
    auth_keys: str = settings.setting(
        "GATEWAY_AUTH_KEYS", "", secret=True,
        doc="JWKS (inline JSON or a file path) of the keys that sign tokens, by kid")
    auth_audience: str = settings.setting("GATEWAY_AUTH_AUDIENCE", "movierec",
                                          doc="the aud claim tokens must carry")
    auth_issuer: str = settings.setting("GATEWAY_AUTH_ISSUER", "movierec",
                                        doc="the iss claim tokens must carry")
    rate_limit: float = settings.setting("GATEWAY_RATE_LIMIT", 0.0, minimum=0, maximum=1e6,
                                         doc="calls per second per client (0 = no limit)")
    rate_burst: int = settings.setting("GATEWAY_RATE_BURST", 20, minimum=1, maximum=1_000_000,
                                       doc="calls a client may make at once (bucket size)")
    catalog_refresh: float = settings.setting(
        "GATEWAY_CATALOG_REFRESH", 1.0, minimum=0.05, maximum=3600,
        doc="seconds between checks of the catalog's version (the movie snapshot)")
    trusted_proxies: str = settings.setting(
        "GATEWAY_TRUSTED_PROXIES", "",
        doc="addresses/CIDRs whose x-forwarded-for names the client (the web facade)")

    def __post_init__(self) -> None:
        problems = []
        if self.auth_required and not self.auth_keys:
            problems.append("GATEWAY_AUTH_REQUIRED needs GATEWAY_AUTH_KEYS")
        if self.auth_keys:
            try:
                tokens.load_keys(self.auth_keys)
            except tokens.KeySetError as exc:
                problems.append(f"GATEWAY_AUTH_KEYS: {exc}")
        if self.rate_limit and not self.redis_url:
            problems.append("GATEWAY_RATE_LIMIT needs REDIS_URL (the buckets live there)")
        try:
            sentinels = sentinel_addresses(self.redis_sentinels)
        except ValueError as exc:
            problems.append(f"REDIS_SENTINELS: {exc}")
            sentinels = []
        if sentinels and self.redis_cluster:
            problems.append("REDIS_SENTINELS and REDIS_CLUSTER exclude each other")
        if (sentinels or self.redis_cluster) and not self.redis_url:
            problems.append("REDIS_SENTINELS and REDIS_CLUSTER need REDIS_URL (empty: no "
                            "cache): with sentinels, e.g. redis://:PASSWORD@master/0")
        if sentinels and not self.redis_sentinel_master:
            problems.append("REDIS_SENTINELS needs REDIS_SENTINEL_MASTER")
        try:
            networks(self.trusted_proxies)
        except ValueError as exc:
            problems.append(f"GATEWAY_TRUSTED_PROXIES: {exc}")
        if problems:
            raise settings.SettingsError("invalid settings: " + "; ".join(problems))

    def cache(self) -> Cache:
        """The answer cache on the Redis these settings name (none: a cache that is off)."""
        return Cache(self.redis_url, self.cache_ttl, self.redis_timeout,
                     sentinels=sentinel_addresses(self.redis_sentinels),
                     sentinel_master=self.redis_sentinel_master, cluster=self.redis_cluster)

    def verifier(self) -> tokens.Verifier | None:
        """The token verifier when auth is on, else None."""
        if not self.auth_required:
            return None
        return tokens.Verifier(tokens.load_keys(self.auth_keys), self.auth_audience,
                               self.auth_issuer)


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
    server_config = settings.server_settings()
    backends = Backends(config.embedder_addr, config.retriever_addr, config.catalog_addr,
                        tls.channel_credentials(server_config))
    cache = config.cache()
    versions = ModelVersions(backends, interval=5.0)
    movies = MovieSnapshot(backends, config.catalog_refresh)
    servicer = GatewayServicer(backends, cache, versions, config.call_timeout, movies)
    spec = ServiceSpec(SERVICE, servicer, register)
    limiter = (RateLimiter(cache.redis, config.rate_limit, config.rate_burst)
               if config.rate_limit and cache.redis is not None else None)
    guard = Guard(config.verifier(), limiter, networks(config.trusted_proxies))
    log.info("callers", extra={"auth": "required" if guard.verifier else "off",
                               "rate_limit": config.rate_limit or "off"})
    server, bound = await build_server("gateway", [spec], port, server_config, guard)
    server.on_stop(backends.close)
    server.on_stop(cache.close)
    start_task(server, versions.run())
    start_task(server, movies.run())
    start_task(server, follow_health(server, _Readiness(backends, cache), 1.0, "backends",
                                     down_after=3))
    return server, bound


def security_summary(environ: Mapping[str, str]) -> list[str]:
    """How the stack configured by ``environ`` treats callers, for ``movierec up``."""
    config = settings.load(GatewaySettings, environ)
    server = settings.server_settings(environ)
    auth = ("required: RecordRating and user-id recommendations need the user's token "
            "(movierec token --user ID)" if config.auth_required else
            "OFF: anyone may rate and get recommendations as any user id (set "
            "GATEWAY_AUTH_REQUIRED=true and GATEWAY_AUTH_KEYS; docs/security.md)")
    rate = (f"{config.rate_limit:g} calls/s per client, bursts of {config.rate_burst}"
            if config.rate_limit else "off (GATEWAY_RATE_LIMIT)")
    transport = ("mutual TLS" if server.tls_ca and server.tls_cert else
                 "TLS" if server.tls else "plaintext (MOVIEREC_TLS_CERT/KEY/CA)")
    return [f"auth: {auth}", f"rate limit: {rate}", f"gRPC: {transport}"]


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main("gateway", GatewaySettings, create_server, argv or [])
