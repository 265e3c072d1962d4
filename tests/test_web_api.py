"""The web facade's HTTP API against a real in-process gRPC gateway stub.

The stub is a real gRPC server (port 0) whose Recommend validates with the gateway's
own ``normalize`` and pages with real tokens; magic user ids make it fail with chosen
status codes, so every mapping (400/404/503/500), deadline and request-id hop is
exercised over the wire, with the hardening (body limit, security headers, no public
metrics) and the pass-through of the caller's token. The end-to-end path over the real
stack is in tests/test_web_browser.py and, with TLS and tokens on,
tests/test_security_stack.py.
"""

from __future__ import annotations

import collections
import time
from concurrent import futures

import grpc
import pytest
from fastapi.testclient import TestClient
from grpc_health.v1 import health, health_pb2_grpc

from movierec import paging
from movierec.apps.gateway.query import recommend_query
from movierec.apps.web import server
from movierec.apps.web.app import create_app
from movierec.common.v1 import common_pb2
from movierec.errors import InvalidArgument
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.gateway.v1 import gateway_pb2_grpc
from movierec.server import retry_info
from movierec.stack.process import free_port

TIMEOUT = 0.5
FAILURES = {4040: grpc.StatusCode.NOT_FOUND, 5030: grpc.StatusCode.UNAVAILABLE,
            5000: grpc.StatusCode.INTERNAL, 4010: grpc.StatusCode.UNAUTHENTICATED,
            4030: grpc.StatusCode.PERMISSION_DENIED, 4290: grpc.StatusCode.RESOURCE_EXHAUSTED,
            5031: grpc.StatusCode.FAILED_PRECONDITION}


def stub_movie(movie_id: int) -> common_pb2.Movie:
    return common_pb2.Movie(movie_id=movie_id, title=f"Movie {movie_id}",
                            year=0 if movie_id == 3 else 1990 + movie_id, genres=["Drama"])


class StubGateway(gateway_pb2_grpc.GatewayServicer):
    def __init__(self) -> None:
        self.seen: dict[str, tuple] = {}
        self.attempts: collections.Counter = collections.Counter()
        self.popular: pb.ListPopularRequest | None = None

    def _note(self, name: str, request, context) -> None:
        self.seen[name] = (request, dict(context.invocation_metadata()))
        self.attempts[name, getattr(request, "user_id", 0)] += 1

    def Recommend(self, request, context):  # noqa: N802
        self._note("Recommend", request, context)
        if request.user_id == 5040:
            time.sleep(TIMEOUT * 2)
        if request.user_id == 4290:
            context.set_trailing_metadata(retry_info.trailers("slow down", 2.2))
        if request.user_id in FAILURES:
            context.abort(FAILURES[request.user_id], "db at 10.0.0.7:5432 refused")
        try:
            query, identity = recommend_query(request)
        except InvalidArgument as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        hidden = set(query.exclude) | set(query.liked or ())
        start = query.page_start
        ids = [i for i in range(1, 60) if i not in hidden][start:start + query.top_k]
        items = [pb.RecommendedMovie(**{f: getattr(stub_movie(i), f) for f in (
            "movie_id", "title", "year", "genres")}, score=1 / i, reason="because stub")
            for i in ids]
        token = paging.encode(query.page_start + query.top_k, identity.fingerprint)
        return pb.RecommendResponse(items=items, model_version="stub@1", next_page_token=token)

    def SimilarMovies(self, request, context):  # noqa: N802
        if request.movie_id == 999:
            context.abort(grpc.StatusCode.NOT_FOUND, "movie 999 has no pinsage vector")
        return pb.SimilarMoviesResponse(items=[pb.RecommendedMovie(
            movie_id=7, title="Movie 7", score=0.9, reason="similar to Movie 1")],
            model_version=f"{request.model}@1", cached=True)

    def SearchMovies(self, request, context):  # noqa: N802
        self._note("SearchMovies", request, context)
        return pb.SearchMoviesResponse(movies=[stub_movie(1)], next_page_token="next")

    def ListPopular(self, request, context):  # noqa: N802
        self.popular = request
        return pb.ListPopularResponse(movies=[
            pb.PopularMovie(movie=stub_movie(i), ratings=100 - i)
            for i in range(1, request.limit + 1)])

    def ListGenres(self, request, context):  # noqa: N802
        return pb.ListGenresResponse(genres=["Comedy", "Drama"])

    def RecordRating(self, request, context):  # noqa: N802
        self._note("RecordRating", request, context)
        if request.user_id in FAILURES:
            context.abort(FAILURES[request.user_id], "db at 10.0.0.7:5432 refused")
        if not 1 <= request.rating <= 5:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "rating: must be between 1 and 5")
        return pb.RecordRatingResponse(user_id=request.user_id, movie_id=request.movie_id,
                                       rating=request.rating, timestamp=1_700_000_000)


@pytest.fixture(scope="module")
def stubs():
    gateway = StubGateway()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    gateway_pb2_grpc.add_GatewayServicer_to_server(gateway, grpc_server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    yield f"127.0.0.1:{port}", gateway
    grpc_server.stop(0)


@pytest.fixture(scope="module")
def client(stubs):
    address = stubs[0]
    with TestClient(create_app(address, TIMEOUT)) as test_client:
        yield test_client


def error_of(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"} and body["error"] == code, body
    return body["message"]


def test_page_and_docs_need_no_cdn(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for asset in ("/", "/static/app.js", "/static/app.css"):
        assert "https://" not in client.get(asset).text and "//cdn" not in client.get(asset).text
    docs = client.get("/docs").text
    assert "cdn." not in docs and "/static-offline-docs/swagger-ui-bundle.js" in docs
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert "cdn." not in client.get("/redoc").text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/recommend", "/api/ratings", "/api/movies/popular", "/api/movies/search",
            "/api/movies/{movie_id}/similar"} <= set(paths)


def test_popular_genres_and_search(client: TestClient, stubs) -> None:
    reply = client.get("/api/movies/popular", params={"genre": "Drama", "limit": 3}).json()
    assert [m["movie_id"] for m in reply["movies"]] == [1, 2, 3]
    assert reply["movies"][2]["year"] is None and reply["movies"][0]["year"] == 1991
    assert list(stubs[1].popular.genres) == ["Drama"] and stubs[1].popular.limit == 3
    assert client.get("/api/genres").json() == {"genres": ["Comedy", "Drama"]}
    found = client.get("/api/movies/search", params={"q": "toy", "page_token": "t"}).json()
    assert found["movies"][0]["title"] == "Movie 1" and found["next_page_token"] == "next"
    sent = stubs[1].seen["SearchMovies"][0]
    assert (sent.query, sent.page_token, sent.limit) == ("toy", "t", 20)
    assert "q" in error_of(client.get("/api/movies/search"), 400, "INVALID_ARGUMENT")
    error_of(client.get("/api/movies/popular", params={"limit": 0}), 400, "INVALID_ARGUMENT")


def test_recommend_liked_pages_and_excludes(client: TestClient) -> None:
    body = {"liked": {"movie_ids": [1, 2]}, "exclude_movie_ids": [4], "top_k": 5}
    first = client.post("/api/recommend", json=body).json()
    assert [i["movie_id"] for i in first["items"]] == [3, 5, 6, 7, 8]
    assert first["model_version"] == "stub@1" and first["items"][0]["reason"] == "because stub"
    second = client.post("/api/recommend", json={**body, "page_token": first["next_page_token"]})
    assert [i["movie_id"] for i in second.json()["items"]] == [9, 10, 11, 12, 13]
    changed = client.post("/api/recommend", json={**body, "top_k": 6,
                                                   "page_token": first["next_page_token"]})
    assert error_of(changed, 400, "INVALID_ARGUMENT").startswith("page_token")


def test_recommend_profile_sends_visitor_id(client: TestClient, stubs) -> None:
    body = {"profile": {"age": 30, "gender": "F", "occupation": 4, "user_id": 1_234_567_890},
            "include_seen": True}
    assert client.post("/api/recommend", json=body).status_code == 200
    sent = stubs[1].seen["Recommend"][0]
    assert sent.profile.HasField("user_id") and sent.profile.user_id == 1_234_567_890
    assert sent.include_seen and sent.top_k == 0
    client.post("/api/recommend", json={"profile": {"age": 30, "gender": "F", "occupation": 4}})
    assert not stubs[1].seen["Recommend"][0].profile.HasField("user_id")


def test_recommend_profile_and_liked_sends_both(client: TestClient, stubs) -> None:
    profile = {"age": 30, "gender": "F", "occupation": 4, "user_id": 1_234_567_890}
    body = {"profile_and_liked": {"profile": profile, "liked": {"movie_ids": [1, 2]}},
            "exclude_movie_ids": [4], "top_k": 5}
    first = client.post("/api/recommend", json=body)
    assert first.status_code == 200, first.text
    assert [i["movie_id"] for i in first.json()["items"]] == [3, 5, 6, 7, 8]
    sent = stubs[1].seen["Recommend"][0]
    assert sent.WhichOneof("query") == "profile_and_liked"
    both = sent.profile_and_liked
    assert (both.profile.age, both.profile.gender, both.profile.occupation) == (30, "F", 4)
    assert both.profile.HasField("user_id") and both.profile.user_id == 1_234_567_890
    assert list(both.liked.movie_ids) == [1, 2] and not both.liked.weights
    assert list(sent.exclude_movie_ids) == [4]
    second = client.post("/api/recommend", json={**body, "page_token": first.json()[
        "next_page_token"]})
    assert [i["movie_id"] for i in second.json()["items"]] == [9, 10, 11, 12, 13]


@pytest.mark.parametrize("liked", [None, {}, {"movie_ids": []}])
def test_recommend_profile_and_no_like_yet(client: TestClient, stubs, liked) -> None:
    part = {"profile": {"age": 30, "gender": "M", "occupation": 12}}
    if liked is not None:
        part["liked"] = liked
    reply = client.post("/api/recommend", json={"profile_and_liked": part, "top_k": 3})
    assert reply.status_code == 200, reply.text
    assert [i["movie_id"] for i in reply.json()["items"]] == [1, 2, 3]
    sent = stubs[1].seen["Recommend"][0]
    assert sent.WhichOneof("query") == "profile_and_liked"
    assert sent.profile_and_liked.profile.gender == "M"
    assert not sent.profile_and_liked.profile.HasField("user_id")
    assert not sent.profile_and_liked.liked.movie_ids


PROFILE = {"age": 25, "gender": "F", "occupation": 1}


@pytest.mark.parametrize(("body", "message"), [
    ({}, "set exactly one of profile, liked, user_id, next_for_user_id or profile_and_liked"),
    ({"user_id": 3, "liked": {"movie_ids": [1]}}, "set exactly one"),
    ({"profile": PROFILE, "profile_and_liked": {"profile": PROFILE}}, "set exactly one"),
    ({"liked": {"movie_ids": [1]}, "profile_and_liked": {"profile": PROFILE}},
     "set exactly one"),
    ({"profile_and_liked": {"profile": {**PROFILE, "gender": "X"}}}, "profile.gender: "),
    ({"profile_and_liked": {"profile": {**PROFILE, "age": 0}}}, "profile.age: "),
    ({"profile_and_liked": {"liked": {"movie_ids": [1]}}}, "profile_and_liked.profile: "),
    ({"profile_and_liked": {"profile": PROFILE, "liked": {"movie_ids": [0]}}},
     "profile_and_liked.liked.movie_ids: "),
    ({"profile_and_liked": {"profile": PROFILE, "liked": {"movie_ids": [1],
                                                          "weights": [1, 2]}}},
     "profile_and_liked.liked.weights: "),
    ({"profile_and_liked": {"profile": PROFILE, "liked": {"ids": [1]}}},
     "profile_and_liked.liked.ids: "),
    ({"user_id": 3, "top_k": "many"}, "top_k: "),
    ({"user_id": 2**70}, "user_id: "),
    ({"user_id": 3, "colour": "red"}, "colour: "),
    ({"liked": {"movie_ids": [1], "weights": [1, 2]}}, "liked.weights: "),
    ({"profile": {"age": 25, "gender": "X", "occupation": 1}}, "profile.gender: "),
    ({"user_id": 3, "top_k": 1000}, "top_k: must be between 1 and 100"),
    ({"user_id": -1}, "user_id: must be between"),
])
def test_recommend_invalid_is_400(client: TestClient, body: dict, message: str) -> None:
    assert message in error_of(client.post("/api/recommend", json=body), 400,
                               "INVALID_ARGUMENT")


@pytest.mark.parametrize(("user_id", "status", "code"), [
    (4040, 404, "NOT_FOUND"), (5030, 503, "UNAVAILABLE"), (5040, 503, "DEADLINE_EXCEEDED"),
    (5000, 500, "INTERNAL"), (4010, 401, "UNAUTHENTICATED"), (4030, 403, "PERMISSION_DENIED"),
    (4290, 429, "RESOURCE_EXHAUSTED"), (5031, 503, "FAILED_PRECONDITION")])
def test_grpc_errors_map_to_http(client: TestClient, user_id: int, status: int,
                                 code: str) -> None:
    start = time.monotonic()
    message = error_of(client.post("/api/recommend", json={"user_id": user_id}), status, code)
    assert time.monotonic() - start < TIMEOUT * 3
    if status >= 500:
        assert "10.0.0.7" not in message  # internal details never reach the browser


def test_similar_and_ratings(client: TestClient) -> None:
    similar = client.get("/api/movies/1/similar", params={"model": "fusion"}).json()
    assert similar["items"][0]["movie_id"] == 7 and similar["model_version"] == "fusion@1"
    assert similar["cached"] is True
    assert "999" in error_of(client.get("/api/movies/999/similar"), 404, "NOT_FOUND")
    error_of(client.get("/api/movies/1/similar", params={"model": "x"}), 400, "INVALID_ARGUMENT")
    error_of(client.get("/api/movies/0/similar"), 400, "INVALID_ARGUMENT")
    stored = client.post("/api/ratings", json={"user_id": 1_500_000_000, "movie_id": 5,
                                               "rating": 4})
    assert stored.json() == {"user_id": 1_500_000_000, "movie_id": 5, "rating": 4,
                             "timestamp": 1_700_000_000}
    bad = client.post("/api/ratings", json={"user_id": 1, "movie_id": 5, "rating": 9})
    assert error_of(bad, 400, "INVALID_ARGUMENT").startswith("rating")
    error_of(client.post("/api/ratings", json={"user_id": 1}), 400, "INVALID_ARGUMENT")
    garbled = client.post("/api/ratings", content="{bad", headers={"content-type":
                                                                   "application/json"})
    assert error_of(garbled, 400, "INVALID_ARGUMENT") == "body: not valid JSON"


def test_request_id_is_returned_and_forwarded(client: TestClient, stubs) -> None:
    reply = client.get("/api/movies/search", params={"q": "x"},
                       headers={"X-Request-ID": "req-web-1"})
    assert reply.headers["x-request-id"] == "req-web-1"
    assert stubs[1].seen["SearchMovies"][1]["x-request-id"] == "req-web-1"
    assert client.get("/api/genres").headers["x-request-id"]


def test_unknown_route_and_health(client: TestClient) -> None:
    error_of(client.get("/api/nothing"), 404, "NOT_FOUND")
    assert client.get("/api/health").json() == {"gateway": "SERVING"}


def test_gateway_down_is_503() -> None:
    closed = f"127.0.0.1:{free_port()}"
    with TestClient(create_app(closed, TIMEOUT)) as down:
        error_of(down.post("/api/recommend", json={"user_id": 1}), 503, "UNAVAILABLE")
        error_of(down.get("/api/movies/popular"), 503, "UNAVAILABLE")
        health_reply = down.get("/api/health")
        assert health_reply.status_code == 503 and health_reply.json()["gateway"] == "UNAVAILABLE"


def test_bad_settings_exit_2(monkeypatch, capsys) -> None:
    monkeypatch.setenv("WEB_PORT", "eighty")
    assert server.main([]) == 2
    assert "WEB_PORT" in capsys.readouterr().err



def test_refusals_tell_how_to_recover(client: TestClient) -> None:
    unauthenticated = client.post("/api/recommend", json={"user_id": 4010})
    assert unauthenticated.headers["www-authenticate"] == "Bearer"
    limited = client.post("/api/recommend", json={"user_id": 4290})
    assert limited.headers["retry-after"] == "3"   # RetryInfo 2.2 s, rounded up


def test_the_callers_token_and_address_reach_the_gateway(client: TestClient, stubs) -> None:
    body = {"user_id": 1_500_000_000, "movie_id": 5, "rating": 4}
    assert client.post("/api/ratings", json=body,
                       headers={"Authorization": "Bearer abc.def.ghi"}).status_code == 200
    sent = stubs[1].seen["RecordRating"][1]
    assert sent["authorization"] == "Bearer abc.def.ghi"
    assert sent["x-forwarded-for"] == "testclient"
    client.post("/api/ratings", json=body)
    assert "authorization" not in stubs[1].seen["RecordRating"][1]


def test_bodies_over_the_limit_are_413(stubs) -> None:
    with TestClient(create_app(stubs[0], TIMEOUT, max_body_bytes=2048)) as small:
        declared = small.post("/api/recommend", json={"liked": {"movie_ids": list(range(
            1, 1000))}})
        assert error_of(declared, 413, "REQUEST_ENTITY_TOO_LARGE") == (
            "request body over 2048 bytes")

        def chunks():
            yield b'{"liked": {"movie_ids": ['
            for _ in range(200):
                yield b"1, 2, 3, 4, 5, 6, 7, 8, "
            yield b"9]}}"
        streamed = small.post("/api/recommend", content=chunks(),
                              headers={"content-type": "application/json"})
        error_of(streamed, 413, "REQUEST_ENTITY_TOO_LARGE")
        assert small.post("/api/recommend", json={"user_id": 3}).status_code == 200


def test_security_headers_and_no_public_metrics(client: TestClient) -> None:
    for path in ("/", "/static/app.js", "/api/genres", "/api/nothing"):
        headers = client.get(path).headers
        assert "script-src 'self';" in headers["content-security-policy"] + ";"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in headers   # plain HTTP here
    assert client.get("/api/genres").headers["cache-control"] == "no-store"
    assert "'unsafe-inline'" in client.get("/docs").headers["content-security-policy"]
    assert "'unsafe-inline'" not in client.get("/").headers["content-security-policy"]
    error_of(client.get("/metrics"), 404, "NOT_FOUND")


def test_metrics_have_their_own_internal_port() -> None:
    from movierec import registry, settings

    config = settings.load(server.WebSettings, {})
    assert config.metrics_port == registry.WEB.metrics_port != config.port
    assert settings.load(server.WebSettings, {"WEB_METRICS_PORT": "-1"}).metrics_port == -1


def test_reads_are_retried_once_and_rating_posts_never(client: TestClient, stubs) -> None:
    error_of(client.post("/api/recommend", json={"user_id": 5030}), 503, "UNAVAILABLE")
    error_of(client.post("/api/ratings", json={"user_id": 5030, "movie_id": 1, "rating": 3}),
             503, "UNAVAILABLE")
    assert stubs[1].attempts["Recommend", 5030] >= 2
    assert stubs[1].attempts["RecordRating", 5030] == 1
