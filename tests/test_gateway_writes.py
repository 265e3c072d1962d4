"""The gateway's write API: who may call it, what it does to the cache, and its HTTP face.

- Over the wire, a real gateway server (the real servicer over in-memory backends) with
  its :class:`~movierec.apps.gateway.guard.Guard` and auth on: admin, the user the
  request names, another user and no token at all, for UpsertMovies, UpsertUser and
  DeleteUser; with auth off every write is open.
- On a real Redis: a deleted user's cached recommendation is never served again (the
  next ``Recommend{user_id}`` is NOT_FOUND), and a profile update drops cached answers.
- The web facade's endpoints over that gateway (tokens passed through, 400/401/403/404,
  writes never retried).
The catalog side (ids, idempotency, validation, cascades) is tests/test_catalog_writes.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import asynccontextmanager, contextmanager

import grpc
import jwt
import pytest
from fastapi.testclient import TestClient
from gateway_fakes import HISTORY, USERS, FakeDownstream, rated

from movierec import settings
from movierec.apps.gateway import token_cli
from movierec.apps.gateway.cache import Cache
from movierec.apps.gateway.guard import Guard
from movierec.apps.gateway.server import SERVICE
from movierec.apps.gateway.servicer import GatewayServicer, register
from movierec.apps.web.app import create_app
from movierec.catalog.v1 import catalog_pb2
from movierec.common.v1 import common_pb2
from movierec.errors import NotFound, Unauthenticated, Unavailable
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.gateway.v1 import gateway_pb2_grpc
from movierec.security import tokens
from movierec.server import client
from movierec.server.factory import ServiceSpec, build_server

C = grpc.StatusCode
KEYS = tokens.load_keys(json.dumps(tokens.new_hmac_jwks("test")))
VERIFIER = tokens.Verifier(KEYS, "movierec", "movierec")
ADMIN = -1    # token() for an admin (subject 1, role admin)
MOVIES = pb.UpsertMoviesRequest(movies=[common_pb2.Movie(title="New One", year=2020,
                                                          genres=["Drama"])])


def token(user: int, role: str | None = None, ttl: float = 60) -> str:
    if user == ADMIN:
        user, role = 1, tokens.ADMIN
    return tokens.issue(KEYS["test"], str(user), ttl, "movierec", "movierec", role=role)


def bearer(user: int | None) -> dict[str, str]:
    return {} if user is None else {"Authorization": f"Bearer {token(user)}"}


class Versions:
    value = "fusion@1|pinsage@1"


class Context:
    def time_remaining(self) -> float:
        return 2.0


class Writable(FakeDownstream):
    """A downstream whose users can be signed up, changed and deleted (per instance); user
    5030's delete fails as if the catalog were down."""

    def __init__(self) -> None:
        super().__init__()
        self.users = {k: catalog_pb2.User(user_id=k, gender=u.gender, age=u.age,
                                          occupation=u.occupation) for k, u in USERS.items()}
        self.history = {k: list(v) for k, v in HISTORY.items()}

    async def user(self, user_id, limit, deadline):
        self.calls.append(("user", user_id))
        if user_id not in self.users:
            return None
        return self.users[user_id], rated(self.history.get(user_id, []))

    async def upsert_user(self, request, deadline):
        reply = await super().upsert_user(request, deadline)
        reply.created = reply.user.user_id not in self.users
        self.users[reply.user.user_id] = reply.user
        return reply

    async def delete_user(self, user_id, deadline):
        self.calls.append(("delete_user", user_id))
        if user_id == 5030:
            raise Unavailable("catalog database unavailable")
        if self.users.pop(user_id, None) is None:
            raise NotFound(f"user {user_id} not found")
        return len(self.history.pop(user_id, []))


async def started_gateway(guard: Guard, down: FakeDownstream, redis_url: str = ""):
    cache = Cache(redis_url, 60, 0.5)
    servicer = GatewayServicer(down, cache, Versions(), call_timeout=1.0)
    spec = ServiceSpec(SERVICE, servicer, register)
    server, port = await build_server("gateway", [spec], 0, settings.ServerSettings(), guard)
    await server.readiness.set_serving(True)
    return server, port, cache


@asynccontextmanager
async def gateway(guard: Guard, down: FakeDownstream | None = None):
    """A started gateway (with ``guard``) and a stub of it."""
    server, port, cache = await started_gateway(guard, down or Writable())
    channel = client.channel(f"127.0.0.1:{port}")
    try:
        yield gateway_pb2_grpc.GatewayStub(channel)
    finally:
        await channel.close()
        await server.stop(0)
        await cache.close()


async def code_of(call, request, user: int | None = None) -> C:
    metadata = (("authorization", f"Bearer {token(user)}"),) if user is not None else ()
    try:
        await call(request, timeout=3, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return C.OK


# -- tokens -------------------------------------------------------------------------------


def test_tokens_carry_an_optional_role_and_an_unknown_one_is_refused() -> None:
    assert VERIFIER.identity(token(7)) == tokens.Identity("7", None)
    assert VERIFIER.identity(token(ADMIN)) == tokens.Identity("1", "admin")
    assert VERIFIER.identity(token(ADMIN)).admin and not VERIFIER.identity(token(7)).admin
    assert VERIFIER.subject(token(ADMIN)) == "1"
    forged = jwt.encode({"sub": "7", "aud": "movierec", "iss": "movierec", "exp": 2**40,
                         "role": "root"}, KEYS["test"].key, algorithm="HS256",
                        headers={"kid": "test"})
    with pytest.raises(Unauthenticated, match="role"):
        VERIFIER.identity(forged)
    with pytest.raises(ValueError, match="role"):
        tokens.issue(KEYS["test"], "7", 60, "movierec", "movierec", role="root")


def test_the_token_command_issues_admin_tokens(capsys) -> None:
    keys = json.dumps(tokens.new_hmac_jwks("cli"))
    verifier = tokens.Verifier(tokens.load_keys(keys), "movierec", "movierec")
    assert token_cli.main(["--user", "3", "--admin", "--keys", keys]) == 0
    assert verifier.identity(capsys.readouterr().out.strip()) == tokens.Identity("3", "admin")
    assert token_cli.main(["--user", "3", "--keys", keys]) == 0
    assert verifier.identity(capsys.readouterr().out.strip()).role is None
    with pytest.raises(SystemExit):
        token_cli.main(["--new-key", "--admin"])


# -- the guard ----------------------------------------------------------------------------


def test_writes_need_an_admin_or_the_named_users_own_token() -> None:
    guard = Guard(VERIFIER, None)
    profile = {"age": 30, "gender": "F", "occupation": 3}
    callers = [ADMIN, 8, 9, None]     # admin, the user named, another user, anonymous

    async def scenario() -> dict[str, list[C]]:
        async with gateway(guard) as stub:
            cases = {
                "UpsertMovies": (stub.UpsertMovies, MOVIES),
                "UpsertUser 8": (stub.UpsertUser, pb.UpsertUserRequest(user_id=8, **profile)),
                "sign up": (stub.UpsertUser, pb.UpsertUserRequest(**profile)),
                "DeleteUser 8": (stub.DeleteUser, pb.DeleteUserRequest(user_id=8)),
            }
            out = {}
            for name, (call, request) in cases.items():
                # DeleteUser 8 last by the admin: the others must be refused before it
                order = [8, 9, None, ADMIN] if name.startswith("Delete") else callers
                codes = {who: await code_of(call, request, who) for who in order}
                out[name] = [codes[who] for who in callers]
            return out
    assert asyncio.run(scenario()) == {
        "UpsertMovies": [C.OK, C.PERMISSION_DENIED, C.PERMISSION_DENIED, C.UNAUTHENTICATED],
        "UpsertUser 8": [C.OK, C.OK, C.PERMISSION_DENIED, C.UNAUTHENTICATED],
        "sign up": [C.OK, C.PERMISSION_DENIED, C.PERMISSION_DENIED, C.UNAUTHENTICATED],
        "DeleteUser 8": [C.NOT_FOUND, C.OK, C.PERMISSION_DENIED, C.UNAUTHENTICATED],
    }


def test_a_user_may_delete_themself_but_an_admin_role_is_needed_for_reads_of_others() -> None:
    guard = Guard(VERIFIER, None)

    async def scenario() -> list[C]:
        async with gateway(guard) as stub:
            return [
                await code_of(stub.DeleteUser, pb.DeleteUserRequest(user_id=7), 7),
                await code_of(stub.Recommend, pb.RecommendRequest(user_id=7), 7),
                # an admin token is no key to another user's recommendations or ratings
                await code_of(stub.Recommend, pb.RecommendRequest(user_id=8), ADMIN),
                await code_of(stub.RecordRating, pb.RecordRatingRequest(
                    user_id=8, movie_id=3, rating=4), ADMIN),
                await code_of(stub.DeleteUser, pb.DeleteUserRequest(user_id=0), ADMIN),
                await code_of(stub.UpsertUser, pb.UpsertUserRequest(
                    user_id=9, age=30, gender="X", occupation=1), 9),
            ]
    assert asyncio.run(scenario()) == [C.OK, C.NOT_FOUND, C.PERMISSION_DENIED,
                                       C.PERMISSION_DENIED, C.INVALID_ARGUMENT,
                                       C.INVALID_ARGUMENT]


def test_with_auth_off_writes_stay_open() -> None:
    async def scenario() -> list[C]:
        async with gateway(Guard(None, None)) as stub:
            return [await code_of(stub.UpsertMovies, MOVIES),
                    await code_of(stub.UpsertUser, pb.UpsertUserRequest(
                        age=30, gender="M", occupation=2)),
                    await code_of(stub.DeleteUser, pb.DeleteUserRequest(user_id=8), 9)]
    assert asyncio.run(scenario()) == [C.OK, C.OK, C.OK]


def test_bad_movies_are_refused_before_the_catalog_is_called() -> None:
    down = Writable()

    async def scenario():
        async with gateway(Guard(None, None), down) as stub:
            codes = []
            for bad in (common_pb2.Movie(title="", year=2000),
                        common_pb2.Movie(title="X", genres=["Nope"]),
                        common_pb2.Movie(title="X", year=1700)):
                try:
                    await stub.UpsertMovies(pb.UpsertMoviesRequest(
                        movies=[MOVIES.movies[0], bad]), timeout=3)
                except grpc.aio.AioRpcError as exc:
                    codes.append((exc.code(), exc.details().split(":")[0]))
            return codes
    assert asyncio.run(scenario()) == [(C.INVALID_ARGUMENT, "movies[1].title"),
                                       (C.INVALID_ARGUMENT, "movies[1].genres"),
                                       (C.INVALID_ARGUMENT, "movies[1].year")]
    assert not [c for c in down.calls if c[0] == "upsert_movies"]


# -- the cache (real Redis) ---------------------------------------------------------------


async def _recommend(gateway: GatewayServicer, user_id: int) -> pb.RecommendResponse:
    return pb.RecommendResponse.FromString(
        await gateway.Recommend(pb.RecommendRequest(user_id=user_id, top_k=5), Context()))


def test_a_deleted_user_is_not_found_at_once_even_after_a_cached_answer(
        redis_url: str) -> None:
    async def scenario():
        cache = Cache(redis_url, ttl=60, timeout=0.5, bump_retry_seconds=0.02)
        down = Writable()
        gateway = GatewayServicer(down, cache, Versions(), call_timeout=1.0)
        await cache.redis.flushdb()   # answers other tests cached for user 7 (same key)
        try:
            first, second = await _recommend(gateway, 7), await _recommend(gateway, 7)
            gone = await gateway.DeleteUser(pb.DeleteUserRequest(user_id=7), Context())
            with pytest.raises(NotFound):
                await _recommend(gateway, 7)
            return first, second, gone
        finally:
            await cache.close()
    first, second, gone = asyncio.run(scenario())
    assert not first.cached and second.cached and first.items
    assert (gone.user_id, gone.ratings_deleted) == (7, len(HISTORY[7]))


def test_a_profile_update_drops_the_users_cached_answers(redis_url: str) -> None:
    async def scenario():
        cache = Cache(redis_url, ttl=60, timeout=0.5, bump_retry_seconds=0.02)
        down = Writable()
        gateway = GatewayServicer(down, cache, Versions(), call_timeout=1.0)
        try:
            await _recommend(gateway, 8)
            cached = await _recommend(gateway, 8)
            reply = await gateway.UpsertUser(pb.UpsertUserRequest(
                user_id=8, age=60, gender="F", occupation=13), Context())
            fresh = await _recommend(gateway, 8)
            signed = await gateway.UpsertUser(pb.UpsertUserRequest(
                age=20, gender="M", occupation=4), Context())
            return cached, reply, fresh, signed
        finally:
            await cache.close()
    cached, reply, fresh, signed = asyncio.run(scenario())
    assert cached.cached and not fresh.cached
    assert (reply.user_id, reply.age_bucket, reply.gender, reply.occupation, reply.created) \
        == (8, 56, "F", 13, False)
    assert (signed.user_id, signed.age_bucket, signed.created) == (1000, 18, True)


# -- the web facade -----------------------------------------------------------------------


@contextmanager
def threaded_gateway(guard: Guard, down: FakeDownstream):
    """A gateway serving from its own thread and event loop (the facade runs in another)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)
    server, port, cache = run(started_gateway(guard, down))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        run(server.stop(0))
        run(cache.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def web():
    down = Writable()
    with threaded_gateway(Guard(VERIFIER, None), down) as address, \
            TestClient(create_app(address, 1.0)) as test_client:
        yield test_client, down


def error_of(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"] == code, response.json()
    return response.json()["message"]


def test_web_movies_need_an_admin_and_answer_the_stored_movies(web) -> None:
    http, _ = web
    body = {"movies": [{"title": "Web Film", "year": 2021, "genres": ["Comedy", "Action"]},
                       {"movie_id": 5, "title": "Kept", "genres": []}]}
    ok = http.post("/api/movies", json=body, headers=bearer(ADMIN))
    assert ok.status_code == 200, ok.text
    assert ok.json()["movies"] == [
        {"movie_id": 40, "title": "Web Film", "year": 2021, "genres": ["Action", "Comedy"]},
        {"movie_id": 5, "title": "Kept", "year": None, "genres": []}]
    refused = http.post("/api/movies", json=body)
    error_of(refused, 401, "UNAUTHENTICATED")
    assert refused.headers["www-authenticate"] == "Bearer"
    error_of(http.post("/api/movies", json=body, headers=bearer(7)), 403, "PERMISSION_DENIED")
    bad = {"movies": [{"title": "X", "genres": ["Nope"]}]}
    assert error_of(http.post("/api/movies", json=bad, headers=bearer(ADMIN)), 400,
                    "INVALID_ARGUMENT").startswith("movies[0].genres")
    assert error_of(http.post("/api/movies", json={"movies": [{"title": "X", "rating": 5}]},
                              headers=bearer(ADMIN)), 400, "INVALID_ARGUMENT")


def test_web_users_sign_up_update_and_delete(web) -> None:
    http, down = web
    profile = {"age": 33, "gender": "F", "occupation": 2}
    signed = http.post("/api/users", json=profile, headers=bearer(ADMIN))
    assert signed.status_code == 201 and signed.json() == {
        "user_id": 1000, "age_bucket": 25, "gender": "F", "occupation": 2, "created": True}
    error_of(http.post("/api/users", json=profile), 401, "UNAUTHENTICATED")
    error_of(http.post("/api/users", json=profile, headers=bearer(9)), 403, "PERMISSION_DENIED")
    own = http.put("/api/users/9", json=profile, headers=bearer(9))
    assert own.status_code == 200 and own.json()["created"] is False
    error_of(http.put("/api/users/9", json=profile, headers=bearer(8)), 403, "PERMISSION_DENIED")
    assert error_of(http.put("/api/users/9", json={**profile, "gender": "X"},
                             headers=bearer(9)), 400, "INVALID_ARGUMENT").startswith("gender")
    error_of(http.delete("/api/users/8", headers=bearer(9)), 403, "PERMISSION_DENIED")
    error_of(http.delete("/api/users/8"), 401, "UNAUTHENTICATED")
    gone = http.delete("/api/users/8", headers=bearer(8))
    assert gone.status_code == 200 and gone.json() == {"user_id": 8, "ratings_deleted": 0}
    error_of(http.delete("/api/users/8", headers=bearer(ADMIN)), 404, "NOT_FOUND")
    error_of(http.post("/api/recommend", json={"user_id": 8}, headers=bearer(8)), 404,
             "NOT_FOUND")
    error_of(http.delete("/api/users/0", headers=bearer(ADMIN)), 400, "INVALID_ARGUMENT")
    # a write is never retried: one catalog call for an UNAVAILABLE delete
    error_of(http.delete("/api/users/5030", headers=bearer(ADMIN)), 503, "UNAVAILABLE")
    assert down.calls.count(("delete_user", 5030)) == 1
