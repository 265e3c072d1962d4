"""The gateway's Redis cache: never a reason for a request to fail, never stale after a write.

Answers are cached as serialized protobuf under a key derived from the canonical
request and the model versions, with a TTL. An answer about a user also carries that
user's *generation*: a counter in Redis that ``RecordRating`` increments atomically
after the catalog has stored the rating. A read looks up the generation and the answer
in one round trip (a Lua script), so once a write is acknowledged every later read
uses the new generation and misses: an answer computed before the write can never be
served after it. A generation that is missing (expired or evicted) restarts at the
current time in milliseconds, above any value it had, so old answers stay unreachable.

Any Redis error or slowness (``timeout``) counts as a miss and is logged and counted;
a few in a row open a short circuit breaker (:mod:`movierec.apps.gateway.breaker`) so a
dead Redis costs nothing per request. A generation
bump that fails is retried in the background until Redis takes it; meanwhile that
user's answers are neither read from nor written to the cache.

Redis may be one server (``REDIS_URL``), a master found through Redis Sentinel
(``REDIS_SENTINELS``, ``REDIS_SENTINEL_MASTER``) or a Redis Cluster (``REDIS_CLUSTER``):
:func:`connect` builds redis-py's own client for each, which follows a failover or a
slot move by itself. The scripts work on a cluster because a user's keys share one hash
slot (their ``{u<id>}`` hash tag).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from urllib.parse import urlparse

import prometheus_client
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException, RedisError

from movierec import tracing
from movierec.apps.gateway.breaker import Breaker

log = logging.getLogger(__name__)
CACHE_EVENTS = prometheus_client.Counter(
    "movierec_gateway_cache_total", "Gateway cache lookups and failures", ["event"])
PREFIX = "mr:v2:"
FAILURES = (TimeoutError, RedisError, RedisClusterException, OSError)

# KEYS[1] generation key, KEYS[2] answer key prefix (one hash slot: both carry the
# user's hash tag); ARGV[1] now in ms, ARGV[2] generation TTL (s).
# Returns {generation, answer or false}.
_LOOKUP = """
local g = redis.call('GET', KEYS[1])
if not g then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'NX')
  g = redis.call('GET', KEYS[1])
end
return {g, redis.call('GET', KEYS[2] .. ':' .. g)}
"""
# KEYS[1] generation key; ARGV[1] now in ms, ARGV[2] TTL (s). Strictly increases it.
_BUMP = """
local g = redis.call('GET', KEYS[1])
if g and tonumber(g) >= tonumber(ARGV[1]) then
  g = redis.call('INCR', KEYS[1])
else
  g = ARGV[1]
  redis.call('SET', KEYS[1], g)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return g
"""


def _user_tag(user_id: int) -> str:
    return f"{{u{user_id}}}"   # a Redis Cluster hash tag: a user's keys share one slot


def cache_key(kind: str, payload: bytes, versions: str, user_id: int | None = None) -> str:
    """The answer key (a user's answers then get their generation as a suffix)."""
    digest = hashlib.sha256(kind.encode() + b"\0" + versions.encode() + b"\0" + payload)
    owner = f"{_user_tag(user_id)}:" if user_id else ""
    return f"{PREFIX}{owner}{kind}:{digest.hexdigest()[:32]}"


def generation_key(user_id: int) -> str:
    return f"{PREFIX}{_user_tag(user_id)}:gen"


def _now_ms() -> int:
    return int(time.time() * 1000)


def sentinel_addresses(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (REDIS_SENTINELS) as addresses; ValueError if malformed."""
    found = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not host:port: {item!r}")
        found.append((host.strip("[]"), int(port)))
    return found


def connect(url: str, timeout: float, *, sentinels: Sequence[tuple[str, int]] = (),
            sentinel_master: str = "mymaster",
            cluster: bool = False) -> aioredis.Redis | RedisCluster:
    """redis-py's client for ``url``: one server; or, with ``sentinels``, the master the
    sentinels name for ``sentinel_master`` (``url`` then gives only its username,
    password, database and TLS: ``rediss://``); or, with ``cluster``, the Redis Cluster
    that ``url``'s node belongs to. Every socket operation is bounded by ``timeout``."""
    timeouts = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if cluster:
        return RedisCluster.from_url(url, **timeouts)
    if sentinels:
        options = dict(parse_url(url))
        for where in ("host", "port", "path", "connection_class"):
            options.pop(where, None)
        # Sentinels are asked without credentials; the master's come from the URL.
        manager = Sentinel(list(sentinels), sentinel_kwargs=dict(timeouts), **timeouts)
        return manager.master_for(sentinel_master, ssl=urlparse(url).scheme == "rediss",
                                  **options)
    return aioredis.Redis.from_url(url, **timeouts)


class Cache:
    """Redis-backed answer cache with per-user generations and a circuit breaker."""

    def __init__(self, url: str, ttl: float, timeout: float, breaker_seconds: float = 1.0,
                 bump_retry_seconds: float = 0.1, breaker_failures: int = 3, *,
                 sentinels: Sequence[tuple[str, int]] = (), sentinel_master: str = "mymaster",
                 cluster: bool = False) -> None:
        self.ttl = max(1, int(ttl))
        self.generation_ttl = self.ttl * 10
        self.redis = connect(url, timeout, sentinels=sentinels, sentinel_master=sentinel_master,
                             cluster=cluster) if url else None
        self.breaker = Breaker(breaker_seconds, breaker_failures)
        self.bump_retry_seconds = bump_retry_seconds
        self._pending: set[int] = set()   # users whose generation bump has not landed yet
        self._bumper: asyncio.Task | None = None
        if self.redis is not None:
            tracing.instrument_redis(self.redis)   # a span per command, when tracing is on
            self._lookup = self.redis.register_script(_LOOKUP)
            self._bump = self.redis.register_script(_BUMP)

    def _usable(self) -> bool:
        return self.redis is not None and self.breaker.closed()

    def _failed(self, action: str, exc: Exception) -> None:
        CACHE_EVENTS.labels("error").inc()
        opened = self.breaker.failed()
        log.warning("redis %s failed; answering uncached%s: %s", action,
                    " (breaker open)" if opened else "", type(exc).__name__)

    async def reachable(self) -> bool:
        """Whether Redis answers a PING now (for readiness; never raises)."""
        if self.redis is None:
            return False
        try:
            return bool(await self.redis.ping())
        except FAILURES:
            return False

    async def get(self, key: str, user_id: int | None = None) -> tuple[bytes | None, str | None]:
        """(cached answer or None, the generation to store a fresh answer under or None
        when it must not be stored)."""
        if not self._usable() or user_id in self._pending:
            CACHE_EVENTS.labels("bypass").inc()
            return None, None
        try:
            if user_id:
                generation, value = await self._lookup(
                    keys=[generation_key(user_id), key], args=[_now_ms(), self.generation_ttl])
                generation = f":{generation.decode()}"
            else:
                generation, value = "", await self.redis.get(key)
        except FAILURES as exc:
            self._failed("get", exc)
            return None, None
        self.breaker.succeeded()
        CACHE_EVENTS.labels("hit" if value else "miss").inc()
        return (value or None), generation

    async def put(self, key: str, generation: str | None, value: bytes,
                  user_id: int | None = None) -> None:
        if generation is None or not self._usable() or user_id in self._pending:
            return
        try:
            await self.redis.set(f"{key}{generation}", value, ex=self.ttl)
        except FAILURES as exc:
            self._failed("set", exc)

    async def invalidate_user(self, user_id: int) -> bool:
        """Make every cached answer about ``user_id`` unreachable; False when Redis did
        not take it yet (it is retried in the background until it does)."""
        if self.redis is None:
            return True
        try:
            await self._bump(keys=[generation_key(user_id)],
                             args=[_now_ms(), self.generation_ttl])
        except FAILURES as exc:
            self._failed("invalidate", exc)
            self._pending.add(user_id)
            self._start_bumper()
            return False
        CACHE_EVENTS.labels("invalidated").inc()
        return True

    def _start_bumper(self) -> None:
        if self._bumper is None or self._bumper.done():
            self._bumper = asyncio.get_running_loop().create_task(self._retry_bumps())

    async def _retry_bumps(self) -> None:
        while self._pending:
            await asyncio.sleep(self.bump_retry_seconds)
            for user_id in list(self._pending):
                try:
                    await self._bump(keys=[generation_key(user_id)],
                                     args=[_now_ms(), self.generation_ttl])
                except FAILURES:
                    break
                self._pending.discard(user_id)
                CACHE_EVENTS.labels("invalidated").inc()

    async def close(self) -> None:
        if self._bumper is not None:
            self._bumper.cancel()
        if self.redis is not None:
            await self.redis.aclose()
            pool = getattr(self.redis, "connection_pool", None)   # a cluster has none
            for sentinel in getattr(getattr(pool, "sentinel_manager", None), "sentinels", ()):
                await sentinel.aclose()
