"""Per-client rate limit: a token bucket in Redis, shared by every gateway replica.

Each client (see :mod:`movierec.apps.gateway.guard` for who counts as one) has a
bucket of ``burst`` tokens refilled at ``rate`` per second; a call takes one token or is
refused with RESOURCE_EXHAUSTED and the time until a token is back (sent as
``google.rpc.RetryInfo``). The whole check is one Lua script, so it is atomic and one
round trip, and it reads Redis' own clock (``TIME``), so replicas with skewed clocks
share a bucket correctly. Idle buckets expire once they would be full again.

The limit never makes the gateway less available: when Redis fails or is slow the
call is let through (fail open), counted in ``movierec_gateway_ratelimit_total
{result="failed_open"}``, and after a few failures in a row a short circuit breaker
(:mod:`movierec.apps.gateway.breaker`) skips Redis meanwhile.
"""

from __future__ import annotations

import logging

import prometheus_client
import redis.asyncio as aioredis

from movierec.apps.gateway.breaker import Breaker
from movierec.apps.gateway.cache import FAILURES
from movierec.errors import ResourceExhausted

log = logging.getLogger(__name__)
RATE_EVENTS = prometheus_client.Counter(
    "movierec_gateway_ratelimit_total",
    "Rate limit decisions: allowed, limited, failed_open (Redis unusable)", ["result"])
PREFIX = "mr:rl:"
MAX_IDENTITY = 128

# KEYS[1] the client's bucket; ARGV[1] tokens per second, ARGV[2] bucket size.
# Returns {1, 0} when a token was taken, else {0, milliseconds until one is back}.
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local per_ms = tonumber(ARGV[1]) / 1000
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * per_ms)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / per_ms) + 1000)
return {allowed, wait}
"""


class RateLimiter:
    """Token buckets of ``burst`` tokens refilled at ``rate`` per second, in Redis."""

    def __init__(self, client: aioredis.Redis, rate: float, burst: int,
                 breaker_seconds: float = 1.0, breaker_failures: int = 3) -> None:
        self.rate = rate
        self.burst = burst
        self.breaker = Breaker(breaker_seconds, breaker_failures)
        self._take = client.register_script(_TAKE)

    async def take(self, identity: str) -> None:
        """Take one token of ``identity``'s bucket; ResourceExhausted when it is empty."""
        if not self.breaker.closed():
            RATE_EVENTS.labels("failed_open").inc()
            return
        try:
            allowed, wait_ms = await self._take(keys=[PREFIX + identity[:MAX_IDENTITY]],
                                                args=[self.rate, self.burst])
        except FAILURES as exc:
            RATE_EVENTS.labels("failed_open").inc()
            self.breaker.failed()
            log.warning("rate limit not checked (Redis failed, letting calls through): %s",
                        type(exc).__name__)
            return
        self.breaker.succeeded()
        if allowed:
            RATE_EVENTS.labels("allowed").inc()
            return
        RATE_EVENTS.labels("limited").inc()
        seconds = int(wait_ms) / 1000
        raise ResourceExhausted(f"rate limit of {self.rate:g} calls/s exceeded; retry in "
                                f"{seconds:.3f}s", seconds)
