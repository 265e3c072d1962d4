"""The circuit breaker of the gateway's Redis uses (answer cache, rate limits).

Redis failures never fail a request; the breaker only decides whether Redis is asked at
all. It opens after ``threshold`` consecutive failures and stays open for ``seconds``,
so a dead or hung Redis costs nothing per request meanwhile; a success in between
starts the count again. One isolated slow reply (a read past its timeout while both
cores are busy: seen in the serving benchmark at 8 and 32 requests in flight) therefore
no longer sends a whole second of traffic past the cache.
"""

from __future__ import annotations

import time


class Breaker:
    """Consecutive-failure circuit breaker: closed (ask Redis) or open until a time."""

    def __init__(self, seconds: float = 1.0, threshold: int = 3) -> None:
        if threshold < 1 or seconds < 0:
            raise ValueError("a breaker needs threshold >= 1 and seconds >= 0")
        self.seconds = seconds
        self.threshold = threshold
        self._failures = 0
        self._open_until = 0.0

    def closed(self) -> bool:
        """Whether Redis may be asked now."""
        return time.monotonic() >= self._open_until

    def failed(self) -> bool:
        """Count a failure; True when it opened the breaker."""
        self._failures += 1
        if self._failures < self.threshold:
            return False
        self._failures = 0
        self._open_until = time.monotonic() + self.seconds
        return True

    def succeeded(self) -> None:
        self._failures = 0

    def reset(self) -> None:
        """Close now (Redis is known to be back)."""
        self._failures, self._open_until = 0, 0.0
