"""The gateway's Redis cache: never a reason for a request to fail.

Answers are cached as serialized protobuf under a key derived from the normalized
request and the model versions, with a TTL. Each key served to a user is also
recorded in that user's key set, so ``RecordRating`` can drop exactly their answers.
Any Redis error or slowness (``timeout``) counts as a miss, is logged and counted,
and opens a short circuit breaker so a dead Redis costs nothing per request.
Concurrent identical misses are computed once (:mod:`movierec.apps.gateway.flight`).
"""

from __future__ import annotations

import hashlib
import logging
import time

import prometheus_client
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
CACHE_EVENTS = prometheus_client.Counter(
    "movierec_gateway_cache_total", "Gateway cache lookups and failures", ["event"])
PREFIX = "mr:v1:"


def cache_key(kind: str, payload: bytes, versions: str) -> str:
    digest = hashlib.sha256(kind.encode() + b"\0" + versions.encode() + b"\0" + payload)
    return f"{PREFIX}{kind}:{digest.hexdigest()[:32]}"


def user_index(user_id: int) -> str:
    return f"{PREFIX}user:{user_id}:keys"


class Cache:
    """Redis-backed answer cache with a circuit breaker."""

    def __init__(self, url: str, ttl: float, timeout: float, breaker_seconds: float = 1.0):
        self.ttl = max(1, int(ttl))
        self.redis = aioredis.Redis.from_url(url, socket_timeout=timeout,
                                             socket_connect_timeout=timeout) if url else None
        self.breaker_seconds = breaker_seconds
        self._open_until = 0.0

    def _usable(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._open_until

    def _failed(self, action: str, exc: Exception) -> None:
        CACHE_EVENTS.labels("error").inc()
        self._open_until = time.monotonic() + self.breaker_seconds
        log.warning("redis %s failed; answering uncached: %s", action, type(exc).__name__)

    async def get(self, key: str) -> bytes | None:
        if not self._usable():
            CACHE_EVENTS.labels("bypass").inc()
            return None
        try:
            value = await self.redis.get(key)
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("get", exc)
            return None
        CACHE_EVENTS.labels("hit" if value is not None else "miss").inc()
        return value

    async def put(self, key: str, value: bytes, user_id: int | None) -> None:
        if not self._usable():
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(key, value, ex=self.ttl)
                if user_id:
                    pipe.sadd(user_index(user_id), key)
                    pipe.expire(user_index(user_id), self.ttl)
                await pipe.execute()
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("set", exc)

    async def invalidate_user(self, user_id: int) -> int:
        """Drop every cached answer of ``user_id``; the number dropped (0 if Redis is down)."""
        if self.redis is None:
            return 0
        try:
            keys = await self.redis.smembers(user_index(user_id))
            await self.redis.delete(user_index(user_id), *keys)
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("invalidate", exc)
            return 0
        CACHE_EVENTS.labels("invalidated").inc(len(keys))
        return len(keys)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
