"""The four services with everything on: mutual TLS, tokens, a rate limit, real secrets.

Runs catalog, retriever, embedder and gateway through the same machinery as
tests/test_e2e.py (tests/stack_fixture.py, reusing its trained models and loaded
stores) with certificates made here, a JWT key, a Redis that requires a password and a
database URL that carries one; then the web facade in front of it. Shows that only
clients of the stack's CA get in, that user requests need that user's token, that the
rate limit answers with retry info, and that no secret reached any log.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import httpx
import pytest
import redis
from certs import Authority, tls_env
from stack_fixture import Stack, running_stack

from movierec import registry, settings
from movierec.common.v1 import common_pb2
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.gateway.v1 import gateway_pb2_grpc
from movierec.security import tls, tokens
from movierec.server import client, retry_info
from movierec.stack.local_redis import LocalRedis
from movierec.stack.process import stop_process
from movierec.stack.web import start_web

pytestmark = pytest.mark.slow
C = grpc.StatusCode
DB_PASSWORD = "db-Secret-7f3a9c"
REDIS_PASSWORD = "redis-Secret-91c2e4"
JWKS = tokens.new_hmac_jwks("2026-q1")
JWT_KEY = JWKS["keys"][0]["k"]
KEYS = tokens.load_keys(json.dumps(JWKS))
RATE, BURST = 20, 20


def token(user: int) -> str:
    return tokens.issue(KEYS["2026-q1"], str(user), 300, "movierec", "movierec")


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def _configure(pki: Path):
    def configure(env: dict[str, str], local_redis: LocalRedis) -> None:
        ca = Authority.new("movierec stack CA")
        env.update(tls_env(ca.issue_files(pki / "services", "services")))
        plain = redis.Redis.from_url(env["REDIS_URL"])
        plain.config_set("requirepass", REDIS_PASSWORD)
        plain.close()
        env["REDIS_URL"] = _with_password(env["REDIS_URL"], REDIS_PASSWORD)
        env["DATABASE_URL"] = _with_password(env["DATABASE_URL"], DB_PASSWORD)
        env.update({"GATEWAY_AUTH_REQUIRED": "true", "GATEWAY_AUTH_KEYS": json.dumps(JWKS),
                    "GATEWAY_RATE_LIMIT": str(RATE), "GATEWAY_RATE_BURST": str(BURST),
                    "GATEWAY_TRUSTED_PROXIES": "127.0.0.1"})
    return configure


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, database_url: str, milvus_uri: str):
    root = tmp_path_factory.mktemp("secure-stack")
    with running_stack(root, database_url, milvus_uri, _configure(root / "pki")) as stack:
        yield stack


def _credentials(env: dict[str, str]) -> grpc.ChannelCredentials | None:
    return tls.channel_credentials(settings.load(settings.ServerSettings, env))


def call(stack: Stack, method: str, request, user: int | None = None,
         credentials: grpc.ChannelCredentials | None | bool = True,
         port_env: str = "GATEWAY_PORT"):
    """``Gateway.method(request)`` as ``user``; credentials True: the stack's own."""
    creds = _credentials(stack.env) if credentials is True else credentials or None
    metadata = (("authorization", f"Bearer {token(user)}"),) if user is not None else ()

    async def go():
        async with client.channel(f"127.0.0.1:{stack.env[port_env]}",
                                  credentials=creds) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            return await getattr(stub, method)(request, timeout=5, metadata=metadata)
    return asyncio.run(go())


def code(stack: Stack, method: str, request, **kwargs) -> grpc.StatusCode:
    try:
        call(stack, method, request, **kwargs)
    except grpc.RpcError as exc:
        return exc.code()
    return C.OK


def test_only_clients_of_the_stack_ca_get_in(secure: Stack, tmp_path: Path) -> None:
    request = pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=[1, 2]), top_k=3)
    assert len(call(secure, "Recommend", request).items) == 3
    stranger = tls_env(Authority.new("someone else").issue_files(tmp_path, "services"))
    no_cert = {"MOVIEREC_TLS_CA": secure.env["MOVIEREC_TLS_CA"]}
    for service in ("gateway", "catalog", "retriever", "embedder"):   # every port
        port_env = registry.get(service).port_env
        for credentials in (False, _credentials(stranger), _credentials(no_cert)):
            assert code(secure, "Recommend", request, credentials=credentials,
                        port_env=port_env) == C.UNAVAILABLE


def test_user_requests_need_that_users_token(secure: Stack) -> None:
    rating = pb.RecordRatingRequest(user_id=5_000_001, movie_id=3, rating=4)
    assert code(secure, "RecordRating", rating) == C.UNAUTHENTICATED
    assert code(secure, "RecordRating", rating, user=5_000_002) == C.PERMISSION_DENIED
    assert call(secure, "RecordRating", rating, user=5_000_001).rating == 4
    mine = pb.RecommendRequest(user_id=5_000_001, top_k=3)
    assert code(secure, "Recommend", mine) == C.UNAUTHENTICATED
    assert 3 not in {i.movie_id for i in call(secure, "Recommend", mine, user=5_000_001).items}
    profile = common_pb2.Profile(age=25, gender="F", occupation=4)
    assert len(call(secure, "Recommend", pb.RecommendRequest(profile=profile, top_k=2)).items)
    profile.user_id = 5_000_001
    assert code(secure, "Recommend", pb.RecommendRequest(profile=profile),
                user=5_000_003) == C.PERMISSION_DENIED


def test_the_rate_limit_answers_with_retry_info(secure: Stack) -> None:
    async def burst() -> list[grpc.aio.AioRpcError | None]:
        async with client.channel(secure.gateway,
                                  credentials=_credentials(secure.env)) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            metadata = (("authorization", f"Bearer {token(6_000_001)}"),)

            async def one():
                try:
                    await stub.ListGenres(pb.ListGenresRequest(), timeout=5, metadata=metadata)
                except grpc.aio.AioRpcError as exc:
                    return exc
                return None
            return await asyncio.gather(*(one() for _ in range(3 * BURST)))
    outcomes = asyncio.run(burst())
    refused = [e for e in outcomes if e is not None]
    assert refused and all(e.code() == C.RESOURCE_EXHAUSTED for e in refused)
    assert len(refused) <= 2 * BURST
    assert all(0 < retry_info.retry_after(e) <= 1 / RATE + 0.01 for e in refused)
    assert code(secure, "ListGenres", pb.ListGenresRequest(), user=6_000_002) == C.OK


def test_the_web_facade_passes_tokens_through(secure: Stack) -> None:
    proc, url = start_web({**secure.env, "WEB_CALL_TIMEOUT": "5"}, secure.logs)
    try:
        body = {"user_id": 5_000_004, "movie_id": 2, "rating": 5}
        denied = httpx.post(f"{url}/api/ratings", json=body)
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        other = httpx.post(f"{url}/api/ratings", json=body,
                           headers={"Authorization": f"Bearer {token(5_000_005)}"})
        assert other.status_code == 403 and other.json()["error"] == "PERMISSION_DENIED"
        stored = httpx.post(f"{url}/api/ratings", json=body,
                            headers={"Authorization": f"Bearer {token(5_000_004)}"})
        assert stored.status_code == 200 and stored.json()["rating"] == 5
        popular = httpx.get(f"{url}/api/movies/popular?limit=3")
        assert popular.status_code == 200 and len(popular.json()["movies"]) == 3
    finally:
        stop_process(proc)


def test_movierec_recommend_speaks_mtls_with_a_token(secure: Stack, monkeypatch,
                                                     capsys) -> None:
    from movierec import recommend

    for name in ("MOVIEREC_TLS_CERT", "MOVIEREC_TLS_KEY", "MOVIEREC_TLS_CA"):
        monkeypatch.setenv(name, secure.env[name])
    argv = ["--user", "5000001", "--top", "2", "--gateway", secure.gateway]
    assert recommend.main(argv) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert recommend.main([*argv, "--token", token(5_000_001)]) == 0
    assert "Title" in capsys.readouterr().out


def test_no_secret_reaches_any_log(secure: Stack) -> None:
    secure.redis.stop()   # error paths log too; the limit fails open without Redis
    request = pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=[4, 5]), top_k=2)
    assert all(len(call(secure, "Recommend", request).items) == 2 for _ in range(2))
    time.sleep(0.5)   # let the processes flush what the tests above made them log
    logs = {path.name: path.read_text() for path in secure.logs.glob("*.log")}
    assert {"catalog.log", "retriever.log", "embedder.log", "gateway.log",
            "web.log"} <= set(logs)
    for name, text in logs.items():
        for secret in (DB_PASSWORD, REDIS_PASSWORD, JWT_KEY):
            assert secret not in text, f"{name} logged a secret"
    assert "redis://:***@127.0.0.1" in logs["gateway.log"]   # logged, masked
    assert ":***@127.0.0.1" in logs["catalog.log"]
