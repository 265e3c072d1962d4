"""The gateway's answer cache on a real Redis: hits, and never a stale answer after a write.

The servicer runs in-process over an in-memory downstream whose ratings change when
``RecordRating`` is called; the cache is a real Redis from the local runtime.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from gateway_fakes import FakeDownstream, rated
from redis.exceptions import ConnectionError as RedisConnectionError

from movierec.apps.gateway.cache import Cache
from movierec.apps.gateway.servicer import GatewayServicer
from movierec.catalog.v1 import catalog_pb2
from movierec.gateway.v1 import gateway_pb2 as pb


class Writable(FakeDownstream):
    """A downstream whose users' histories grow with RecordRating."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[int, list[tuple[int, int]]] = {7: [(3, 5)]}

    async def user(self, user_id, limit, deadline):
        await asyncio.sleep(random.random() / 1000)  # let calls interleave
        return catalog_pb2.User(user_id=user_id), rated(self.history.get(user_id, []))

    async def record_rating(self, user_id, movie_id, rating, deadline):
        await asyncio.sleep(random.random() / 1000)
        self.history.setdefault(user_id, []).append((movie_id, rating))
        return catalog_pb2.Rating(user_id=user_id, movie_id=movie_id, rating=rating,
                                  timestamp=2)


class Context:
    def time_remaining(self) -> float:
        return 2.0


class Versions:
    value = "fusion@1|pinsage@1"


def servicer(redis_url: str) -> tuple[GatewayServicer, Cache]:
    cache = Cache(redis_url, ttl=60, timeout=0.5, bump_retry_seconds=0.02)
    return GatewayServicer(Writable(), cache, Versions(), call_timeout=1.0), cache


async def _recommend(gateway: GatewayServicer, user_id: int = 7) -> pb.RecommendResponse:
    """The answer as a caller receives it (the servicer answers with its bytes)."""
    return pb.RecommendResponse.FromString(
        await gateway.Recommend(pb.RecommendRequest(user_id=user_id, top_k=5), Context()))


def test_repeated_requests_hit_the_cache(redis_url: str) -> None:
    async def scenario():
        gateway, cache = servicer(redis_url)
        try:
            first, second = await _recommend(gateway, 7), await _recommend(gateway, 7)
            return first, second
        finally:
            await cache.close()
    first, second = asyncio.run(scenario())
    assert not first.cached and second.cached
    assert [i.movie_id for i in first.items] == [i.movie_id for i in second.items]


def test_no_read_after_an_acknowledged_write_sees_the_old_answer(redis_url: str) -> None:
    async def reader(gateway, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await _recommend(gateway)

    async def writer(gateway) -> list[int]:
        stale = []
        for _ in range(15):
            top = (await _recommend(gateway)).items[0].movie_id
            await gateway.RecordRating(pb.RecordRatingRequest(user_id=7, movie_id=top,
                                                              rating=4), Context())
            after = await _recommend(gateway)
            stale += [top] if top in {i.movie_id for i in after.items} else []
        return stale

    async def scenario():
        gateway, cache = servicer(redis_url)
        stop = asyncio.Event()
        readers = [asyncio.ensure_future(reader(gateway, stop)) for _ in range(6)]
        try:
            return await writer(gateway)
        finally:
            stop.set()
            await asyncio.gather(*readers)
            await cache.close()
    assert asyncio.run(scenario()) == []


def test_a_write_whose_invalidation_fails_still_hides_the_old_answer(redis_url: str) -> None:
    async def scenario():
        gateway, cache = servicer(redis_url)
        try:
            before = await _recommend(gateway, 7)
            assert (await _recommend(gateway, 7)).cached
            bump = cache._bump

            async def broken(*args, **kwargs):
                raise RedisConnectionError("redis went away")
            cache._bump = broken
            top = before.items[0].movie_id
            await gateway.RecordRating(pb.RecordRatingRequest(user_id=7, movie_id=top,
                                                              rating=5), Context())
            cache.breaker.reset()   # Redis answers reads again at once
            during = await _recommend(gateway, 7)
            cache._bump = bump
            for _ in range(100):
                if not cache._pending:
                    break
                await asyncio.sleep(0.02)
            after = await _recommend(gateway, 7)
            return top, during, after, cache._pending
        finally:
            await cache.close()
    top, during, after, pending = asyncio.run(scenario())
    assert not during.cached and top not in {i.movie_id for i in during.items}
    assert not pending and top not in {i.movie_id for i in after.items}


@pytest.mark.parametrize("missing", ["expired", "evicted"])
def test_a_lost_generation_never_revives_old_answers(redis_url: str, missing: str) -> None:
    async def scenario():
        gateway, cache = servicer(redis_url)
        try:
            await _recommend(gateway, 9)
            await gateway.RecordRating(pb.RecordRatingRequest(user_id=9, movie_id=1, rating=5),
                                       Context())
            await cache.redis.delete("mr:v2:{u9}:gen")   # as if it expired or was evicted
            return await _recommend(gateway, 9)
        finally:
            await cache.close()
    answer = asyncio.run(scenario())
    assert not answer.cached and 1 not in {i.movie_id for i in answer.items}


def test_recommend_latency_is_recorded_per_query_kind_and_cache_outcome(redis_url) -> None:
    """movierec_gateway_recommend_seconds{kind, cache}: what the dashboard's per-kind
    panels read; a miss is a call that computed its answer."""
    from prometheus_client import REGISTRY

    def count(kind: str, cache: str) -> float:
        return REGISTRY.get_sample_value("movierec_gateway_recommend_seconds_count",
                                         {"kind": kind, "cache": cache}) or 0.0

    request = pb.RecommendRequest(next_for_user_id=7, top_k=3, genres=["Drama"])
    before = (count("next", "miss"), count("next", "hit"))

    async def twice():
        gateway, cache = servicer(redis_url)
        try:
            for _ in range(2):
                await gateway.Recommend(request, Context())
        finally:
            await cache.close()
    asyncio.run(twice())
    assert (count("next", "miss"), count("next", "hit")) == (before[0] + 1, before[1] + 1)
