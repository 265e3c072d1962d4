"""The gateway's guard over the wire: who may act as a user, and how often anyone may call.

A real gateway server (the real servicer over in-memory backends) with its
:class:`~movierec.apps.gateway.guard.Guard`; the rate limit's buckets live in a real
Redis (the ``redis_url`` fixture), shared by two gateway replicas.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import grpc
import pytest
import redis
from gateway_fakes import FakeDownstream
from grpc_health.v1 import health_pb2, health_pb2_grpc

from movierec import settings
from movierec.apps.gateway.cache import Cache
from movierec.apps.gateway.guard import Guard, client_address, networks
from movierec.apps.gateway.ratelimit import PREFIX, RATE_EVENTS, RateLimiter
from movierec.apps.gateway.server import SERVICE, GatewaySettings
from movierec.apps.gateway.servicer import GatewayServicer, register
from movierec.common.v1 import common_pb2
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.gateway.v1 import gateway_pb2_grpc
from movierec.security import tokens
from movierec.server import client, retry_info
from movierec.server.factory import ServiceSpec, build_server

C = grpc.StatusCode
KEYS = tokens.load_keys(json.dumps(tokens.new_hmac_jwks("test")))
PROFILE = common_pb2.Profile(age=30, gender="F", occupation=3)


def token(user: int, ttl: float = 60) -> str:
    return tokens.issue(KEYS["test"], str(user), ttl, "movierec", "movierec")


class Versions:
    value = ""


@asynccontextmanager
async def gateway(guard: Guard, redis_url: str = ""):
    """A started gateway (with ``guard``) and a stub of it."""
    cache = Cache(redis_url, 60, 0.5)
    servicer = GatewayServicer(FakeDownstream(), cache, Versions(), call_timeout=1.0)
    spec = ServiceSpec(SERVICE, servicer, register)
    server, port = await build_server("gateway", [spec], 0, settings.ServerSettings(), guard)
    await server.readiness.set_serving(True)
    channel = client.channel(f"127.0.0.1:{port}")
    try:
        yield gateway_pb2_grpc.GatewayStub(channel), channel
    finally:
        await channel.close()
        await server.stop(0)
        await cache.close()


async def code_of(call, request, user: int | None = None, header: str | None = None,
                  metadata: tuple = ()) -> grpc.StatusCode:
    if user is not None:
        header = f"Bearer {token(user)}"
    sent = (*metadata, ("authorization", header)) if header else metadata
    try:
        await call(request, timeout=3, metadata=sent)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return C.OK


def test_user_requests_need_that_users_token_and_the_rest_stay_anonymous() -> None:
    guard = Guard(tokens.Verifier(KEYS, "movierec", "movierec"), None)

    async def scenario() -> list[grpc.StatusCode]:
        async with gateway(guard) as (stub, _):
            rate = pb.RecordRatingRequest(user_id=5, movie_id=3, rating=4)
            return [
                await code_of(stub.RecordRating, rate),
                await code_of(stub.RecordRating, rate, user=5),
                await code_of(stub.RecordRating, rate, user=6),
                await code_of(stub.Recommend, pb.RecommendRequest(user_id=7, top_k=3)),
                await code_of(stub.Recommend, pb.RecommendRequest(user_id=7, top_k=3), user=7),
                await code_of(stub.Recommend, pb.RecommendRequest(profile=common_pb2.Profile(
                    age=30, gender="F", occupation=3, user_id=7)), user=8),
                await code_of(stub.Recommend, pb.RecommendRequest(profile=PROFILE)),
                await code_of(stub.Recommend, pb.RecommendRequest(
                    liked=common_pb2.LikedMovies(movie_ids=[1, 2]))),
                await code_of(stub.ListPopular, pb.ListPopularRequest()),
                await code_of(stub.ListPopular, pb.ListPopularRequest(), header="Bearer junk"),
                await code_of(stub.RecordRating, rate, header=f"Basic {token(5)}"),
                await code_of(stub.RecordRating, rate, header=f"Bearer {token(5, ttl=-120)}"),
            ]
    assert asyncio.run(scenario()) == [
        C.UNAUTHENTICATED, C.OK, C.PERMISSION_DENIED, C.UNAUTHENTICATED, C.OK,
        C.PERMISSION_DENIED, C.OK, C.OK, C.OK, C.UNAUTHENTICATED, C.UNAUTHENTICATED,
        C.UNAUTHENTICATED]


def test_with_auth_off_tokens_are_ignored() -> None:
    async def scenario() -> list[grpc.StatusCode]:
        async with gateway(Guard(None, None)) as (stub, _):
            rate = pb.RecordRatingRequest(user_id=5, movie_id=3, rating=4)
            return [await code_of(stub.RecordRating, rate),
                    await code_of(stub.RecordRating, rate, header="Bearer junk")]
    assert asyncio.run(scenario()) == [C.OK, C.OK]


@pytest.fixture
def fresh_buckets(redis_url: str) -> str:
    store = redis.Redis.from_url(redis_url)
    for key in store.scan_iter(f"{PREFIX}*"):
        store.delete(key)
    store.close()
    return redis_url


def _limited_guard(cache: Cache, rate: float = 0.5, burst: int = 3) -> Guard:
    return Guard(tokens.Verifier(KEYS, "movierec", "movierec"),
                 RateLimiter(cache.redis, rate, burst))


def test_replicas_share_one_bucket_per_client_and_refusals_carry_retry_info(
        fresh_buckets: str) -> None:
    async def scenario():
        caches = [Cache(fresh_buckets, 60, 0.5) for _ in range(2)]
        guards = [_limited_guard(c) for c in caches]
        async with gateway(guards[0]) as (one, _), gateway(guards[1]) as (two, _):
            errors, codes = [], []
            for i in range(6):   # alternate replicas: one bucket of 3 for user 11
                try:
                    await (one, two)[i % 2].ListPopular(pb.ListPopularRequest(), timeout=3,
                                                       metadata=(("authorization",
                                                                  f"Bearer {token(11)}"),))
                    codes.append(C.OK)
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
                    errors.append(exc)
            others = [await code_of(one.ListPopular, pb.ListPopularRequest(), user=12),
                      await code_of(one.ListPopular, pb.ListPopularRequest())]
        for cache in caches:
            await cache.close()
        return codes, errors, others
    codes, errors, others = asyncio.run(scenario())
    assert codes == [C.OK] * 3 + [C.RESOURCE_EXHAUSTED] * 3
    delays = [retry_info.retry_after(e) for e in errors]
    assert all(0 < d <= 2.0 for d in delays), delays
    assert "rate limit" in errors[0].details()
    assert others == [C.OK, C.OK]   # another user, and an anonymous caller: other buckets


def test_health_checks_are_never_limited(fresh_buckets: str) -> None:
    async def scenario() -> list[int]:
        cache = Cache(fresh_buckets, 60, 0.5)
        async with gateway(_limited_guard(cache, burst=1)) as (_, channel):
            stub = health_pb2_grpc.HealthStub(channel)
            replies = [(await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)).status
                       for _ in range(5)]
        await cache.close()
        return replies
    assert asyncio.run(scenario()) == [health_pb2.HealthCheckResponse.SERVING] * 5


def test_a_dead_redis_lets_calls_through_and_counts_it() -> None:
    before = RATE_EVENTS.labels("failed_open")._value.get()

    async def scenario() -> list[grpc.StatusCode]:
        cache = Cache("redis://127.0.0.1:1/0", 60, 0.05)
        async with gateway(_limited_guard(cache, burst=1)) as (stub, _):
            codes = [await code_of(stub.ListPopular, pb.ListPopularRequest()) for _ in range(4)]
        await cache.close()
        return codes
    assert asyncio.run(scenario()) == [C.OK] * 4
    assert RATE_EVENTS.labels("failed_open")._value.get() - before == 4


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("ipv4:203.0.113.9:5000", "198.51.100.1", "203.0.113.9"),      # untrusted: its own
    ("ipv4:10.1.2.3:5000", "", "10.1.2.3"),
    ("ipv4:10.1.2.3:5000", "198.51.100.1", "198.51.100.1"),       # the facade says who
    ("ipv4:10.1.2.3:5000", "1.1.1.1, 198.51.100.1, 10.0.0.8", "198.51.100.1"),
    ("ipv4:10.1.2.3:5000", "10.0.0.7, 10.0.0.8", "10.0.0.7"),
    ("ipv6:[::1]:5000", "198.51.100.1", "::1"),
])
def test_the_client_address_believes_trusted_proxies_only(peer, forwarded, expected) -> None:
    assert client_address(peer, forwarded, networks("10.0.0.0/8")) == expected


@pytest.mark.parametrize(("environ", "variable"), [
    ({"GATEWAY_AUTH_REQUIRED": "true"}, "GATEWAY_AUTH_KEYS"),
    ({"GATEWAY_AUTH_KEYS": '{"keys": [{"kty": "oct"}]}'}, "GATEWAY_AUTH_KEYS"),
    ({"GATEWAY_RATE_LIMIT": "5"}, "REDIS_URL"),
    ({"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/99"}, "GATEWAY_TRUSTED_PROXIES"),
])
def test_inconsistent_security_settings_stop_the_gateway(environ, variable) -> None:
    with pytest.raises(settings.SettingsError, match=variable) as info:
        settings.load(GatewaySettings, environ)
    assert "kty" not in str(info.value)
