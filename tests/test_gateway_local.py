"""The gateway's in-process caches: hits skip the fetch, misses fetch once, TTL and size bound."""

from __future__ import annotations

import asyncio
import time

from movierec.apps.gateway.local import LocalCache


def test_fetches_only_missing_keys_once() -> None:
    cache = LocalCache("t", max_entries=10, ttl=60)
    calls: list[list[int]] = []

    async def fetch(keys):
        calls.append(list(keys))
        return {k: k * 10 for k in keys if k != 99}

    async def scenario():
        first = await cache.get_many([1, 2, 2, 99], fetch)
        second = await cache.get_many([2, 3], fetch)
        return first, second
    first, second = asyncio.run(scenario())
    assert first == {1: 10, 2: 20} and second == {2: 20, 3: 30}
    assert calls == [[1, 2, 99], [3]]


def test_entries_expire_and_the_oldest_are_evicted() -> None:
    cache = LocalCache("t", max_entries=2, ttl=0.05)
    for key in (1, 2, 3):
        cache.put(key, key)

    async def fetch(keys):
        return {k: -k for k in keys}
    assert asyncio.run(cache.get_many([2, 3], fetch)) == {2: 2, 3: 3}
    assert asyncio.run(cache.get_many([1], fetch)) == {1: -1}  # evicted, fetched again
    time.sleep(0.06)
    assert asyncio.run(cache.get_many([2], fetch)) == {2: -2}  # expired
