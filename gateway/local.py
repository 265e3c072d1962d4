"""Small in-process caches of immutable-enough lookups: movie metadata and item vectors.

A cache miss on ``Recommend`` would otherwise pay two more network hops for data that
hardly ever changes: catalog metadata (cached for ``ttl`` seconds) and the stored
vectors of a model version (never change for that version). Bounded by entry count,
oldest evicted first. Concurrent misses for the same keys may fetch twice; that is
harmless and cheaper than coordinating.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any

import prometheus_client

LOCAL_EVENTS = prometheus_client.Counter(
    "movierec_gateway_local_cache_total", "In-process lookups of movies and vectors",
    ["cache", "event"])


class LocalCache:
    """An LRU map with a time-to-live per entry."""

    def __init__(self, name: str, max_entries: int, ttl: float) -> None:
        self.name = name
        self.max_entries = max_entries
        self.ttl = ttl
        self._data: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()

    def _get(self, key: Hashable, now: float) -> Any | None:
        entry = self._data.get(key)
        if entry is None or entry[0] < now:
            return None
        self._data.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, value: Any) -> None:
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def get_many(self, keys: Iterable[Hashable],
                       fetch: Callable[[list[Hashable]], Awaitable[dict[Hashable, Any]]]
                       ) -> dict[Hashable, Any]:
        """Values for ``keys``; the missing ones come from one ``fetch`` call and are kept."""
        now, found, missing = time.monotonic(), {}, []
        for key in dict.fromkeys(keys):
            value = self._get(key, now)
            if value is None:
                missing.append(key)
            else:
                found[key] = value
        LOCAL_EVENTS.labels(self.name, "hit").inc(len(found))
        if missing:
            LOCAL_EVENTS.labels(self.name, "miss").inc(len(missing))
            for key, value in (await fetch(missing)).items():
                self.put(key, value)
                found[key] = value
        return found
