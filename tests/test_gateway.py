"""The gateway's pipeline, request normalisation, single flight and circuit breaker,
without servers: the pipeline runs against an in-memory :class:`Downstream`."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from gateway_fakes import MOVIES, FakeDownstream, recommender  # noqa: F401

from movierec import limits
from movierec.apps.gateway import breaker as breaker_module
from movierec.apps.gateway.breaker import Breaker
from movierec.apps.gateway.cache import CACHE_EVENTS, Cache
from movierec.apps.gateway.flight import SingleFlight
from movierec.apps.gateway.query import recommend_query, similar_query
from movierec.common.v1 import common_pb2
from movierec.errors import DeadlineExceeded, InvalidArgument, NotFound
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.server.budget import Deadline


def answer(request: pb.RecommendRequest, down: FakeDownstream | None = None):
    """(page items, ranking, downstream) of one Recommend through the pipeline."""
    down = down or FakeDownstream()
    pipeline = recommender(down)
    query, _ = recommend_query(request)

    async def scenario():
        deadline = Deadline.start(1.0, 1.0)
        ranking = await pipeline.rank(query, deadline)
        items, _ = await pipeline.explain(ranking, query.page_start, query.top_k, deadline)
        return items, ranking
    items, ranking = asyncio.run(scenario())
    return items, ranking, down


def recommend(request: pb.RecommendRequest) -> tuple[list[int], FakeDownstream, str]:
    items, ranking, down = answer(request)
    return [i.movie_id for i in items], down, ranking.model


def test_next_for_a_user_reads_the_same_history_for_the_sequence_model() -> None:
    """``next_for_user_id``: the user's history embedded for what comes next (SASRec),
    with the user-id rules: seen movies hidden, an unknown user NOT_FOUND, a bad id
    INVALID_ARGUMENT naming the field."""
    ids, down, model = recommend(pb.RecommendRequest(next_for_user_id=7, top_k=5))
    assert model == "sasrec" and ids == [1, 2, 6, 7, 8]
    assert ("embed_next", (3, 4, 5)) in down.calls
    assert not [c for c in down.calls if c[0] == "embed_history"]
    with pytest.raises(NotFound):
        answer(pb.RecommendRequest(next_for_user_id=99_999, top_k=5))
    with pytest.raises(InvalidArgument, match="next_for_user_id"):
        answer(pb.RecommendRequest(next_for_user_id=-3, top_k=5))


def test_user_history_is_read_once_and_seen_movies_are_hidden() -> None:
    ids, down, model = recommend(pb.RecommendRequest(user_id=7, top_k=5))
    assert model == "pinsage" and ids == [1, 2, 6, 7, 8]
    assert [c for c in down.calls if c[0] == "user"] == [("user", 7)]
    assert ("embed_history", (3, 4, 5)) in down.calls
    assert not [c for c in down.calls if c[0] == "movies"]   # metadata: the snapshot


def test_include_seen_shows_rated_movies() -> None:
    ids, _, _ = recommend(pb.RecommendRequest(user_id=7, top_k=5, include_seen=True))
    assert ids == [1, 2, 3, 4, 5]


def test_a_user_without_ratings_gets_their_profile_and_an_unknown_user_not_found() -> None:
    ids, down, model = recommend(pb.RecommendRequest(user_id=8, top_k=3))
    assert model == "fusion" and ("embed_profile", 8) in down.calls and ids == [1, 2, 3]
    with pytest.raises(NotFound):
        recommend(pb.RecommendRequest(user_id=99, top_k=3))


def test_unknown_liked_ids_are_left_out_and_reported() -> None:
    down = FakeDownstream()
    query, _ = recommend_query(pb.RecommendRequest(
        liked=common_pb2.LikedMovies(movie_ids=[1, 500, 2]), top_k=3))
    ranking = asyncio.run(recommender(down).rank(query, Deadline.start(1.0, 1.0)))
    assert ranking.unknown == (500,) and ranking.liked == (1, 2)


def test_profile_with_user_id_hides_seen_and_liked_ids_are_excluded() -> None:
    profile = common_pb2.Profile(age=30, gender="F", occupation=4, user_id=7)
    ids, down, _ = recommend(pb.RecommendRequest(profile=profile, top_k=3))
    assert ids == [1, 2, 6] and ("user", 7) in down.calls
    ids, down, _ = recommend(pb.RecommendRequest(
        liked=common_pb2.LikedMovies(movie_ids=[1, 2]), exclude_movie_ids=[3], top_k=3))
    assert ids == [4, 5, 6] and ("search", "pinsage", (1, 2, 3)) in down.calls


def test_fusion_items_show_the_reading_the_retriever_computed_in_the_models_words() -> None:
    items, ranking, _ = answer(pb.RecommendRequest(
        profile=common_pb2.Profile(age=30, gender="F", occupation=4), top_k=2))
    assert ranking.model == "fusion"
    assert [round(i.score, 4) for i in items] == [3.0, 2.0]   # offset 1 + 2 / movie id
    assert items[1].reason == "predicted 2.0 stars for women aged 25-34, college/grad student"


def test_a_reason_names_the_liked_movie_the_search_chose_else_a_shared_genre() -> None:
    items, _, _ = answer(pb.RecommendRequest(
        liked=common_pb2.LikedMovies(movie_ids=[2, 5]), top_k=4))
    assert [(i.movie_id, i.reason) for i in items] == [
        (1, "close to your taste"),                       # no related liked movie, no genre
        (3, "because you liked Movie 2 (1990)"), (4, "because you liked Movie 2 (1990)"),
        (6, "because you liked Movie 2 (1990)")]
    genres = {1: ["Drama"], 2: ["Drama", "War"], 5: ["War"], 3: ["War", "Comedy"]}
    for movie_id, names in genres.items():
        MOVIES[movie_id].genres[:] = names
    try:
        items, _, _ = answer(pb.RecommendRequest(
            liked=common_pb2.LikedMovies(movie_ids=[2, 5]), top_k=1))
        assert items[0].reason == "because you like Drama (1 of the movies you liked)"
    finally:
        for movie_id in genres:
            del MOVIES[movie_id].genres[:]


def test_popular_answers_say_why() -> None:
    items, ranking, _ = answer(pb.RecommendRequest(user_id=9, top_k=1))   # no profile
    assert ranking.model == "popular"
    assert items[0].reason == "popular: rated by 999 people (user 9 has no ratings yet)"


def test_equivalent_requests_share_one_canonical_form() -> None:
    a = pb.RecommendRequest(user_id=5, genres=["Drama", "Comedy", "Drama"],
                            exclude_movie_ids=[9, 3, 9])
    b = pb.RecommendRequest(user_id=5, top_k=10, genres=["Comedy", "Drama"],
                            exclude_movie_ids=[3, 9])
    assert recommend_query(a)[1] == recommend_query(b)[1]
    one = similar_query(pb.SimilarMoviesRequest(movie_id=1, genres=["Comedy", "Action"]))[-1]
    two = similar_query(pb.SimilarMoviesRequest(movie_id=1, genres=["Action", "Comedy"]))[-1]
    three = similar_query(pb.SimilarMoviesRequest(movie_id=1, genres=["Action"]))[-1]
    assert one == two != three
    with pytest.raises(InvalidArgument):  # no genre name may smuggle a separator
        similar_query(pb.SimilarMoviesRequest(movie_id=1, genres=["Action,Comedy"]))


@pytest.mark.parametrize(("request_", "field"), [
    (pb.RecommendRequest(), "query"),
    (pb.RecommendRequest(user_id=1, top_k=limits.MAX_TOP_K + 1), "top_k"),
    (pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=[1]), include_seen=True),
     "include_seen"),
    (pb.RecommendRequest(user_id=1, exclude_movie_ids=range(1, limits.MAX_REQUEST_EXCLUDE + 2)),
     "exclude_movie_ids"),
    (pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=range(1, limits.MAX_LIKED + 2))),
     "liked.movie_ids"),
    (pb.RecommendRequest(profile=common_pb2.Profile(age=30, gender="F", occupation=21)),
     "profile.occupation"),
    (pb.RecommendRequest(user_id=1, genres=["Nope"]), "genres"),
    (pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=[1, 2],
                                                      weights=[float("nan"), 1])),
     "liked.weights"),
    (pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=[1, 2], weights=[0, 0])),
     "liked.weights"),
    (pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=[1, 2], weights=[1])),
     "liked.weights"),
])
def test_bad_requests_name_the_field(request_, field) -> None:
    with pytest.raises(InvalidArgument) as raised:
        recommend_query(request_)
    assert raised.value.field == field


# --- single flight ---------------------------------------------------------------------

def test_concurrent_callers_share_one_computation() -> None:
    flights, calls = SingleFlight(), []

    async def compute() -> bytes:
        calls.append(1)
        await asyncio.sleep(0.05)
        return b"answer"

    async def scenario():
        return await asyncio.gather(*(flights.run("k", compute, 1.0) for _ in range(5)))
    assert asyncio.run(scenario()) == [b"answer"] * 5 and len(calls) == 1


def test_a_follower_with_a_shorter_deadline_gives_up_alone() -> None:
    flights = SingleFlight()

    async def compute() -> bytes:
        await asyncio.sleep(0.2)
        return b"slow"

    async def scenario():
        leader = asyncio.ensure_future(flights.run("k", compute, 1.0))
        await asyncio.sleep(0.01)
        with pytest.raises(DeadlineExceeded):
            await flights.run("k", compute, 0.05)
        return await leader
    assert asyncio.run(scenario()) == b"slow"


def test_a_follower_outlives_a_leader_that_ran_out_of_time() -> None:
    flights, calls = SingleFlight(), []

    def compute_with(budget: float):
        async def compute() -> bytes:
            calls.append(budget)
            await asyncio.sleep(0.1)
            if budget < 0.1:
                raise grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                           grpc.aio.Metadata(), grpc.aio.Metadata())
            return b"done"
        return compute

    async def scenario():
        leader = asyncio.ensure_future(flights.run("k", compute_with(0.05), 0.05))
        await asyncio.sleep(0.01)
        follower = await flights.run("k", compute_with(1.0), 1.0)
        with pytest.raises((DeadlineExceeded, grpc.aio.AioRpcError)):
            await leader
        return follower
    assert asyncio.run(scenario()) == b"done" and calls == [0.05, 1.0]


def test_a_cancelled_leader_leaves_followers_their_answer() -> None:
    flights, calls = SingleFlight(), []

    async def compute() -> bytes:
        calls.append(1)
        await asyncio.sleep(0.1)
        return b"shared"

    async def scenario():
        leader = asyncio.ensure_future(flights.run("k", compute, 1.0))
        await asyncio.sleep(0.01)
        follower = asyncio.ensure_future(flights.run("k", compute, 1.0))
        await asyncio.sleep(0.01)
        leader.cancel()
        answer = await follower
        assert leader.cancelled()
        return answer
    assert asyncio.run(scenario()) == b"shared" and calls == [1]


def test_nobody_waiting_cancels_the_computation() -> None:
    flights, finished = SingleFlight(), []

    async def compute() -> bytes:
        await asyncio.sleep(0.1)
        finished.append(1)
        return b"late"

    async def scenario():
        only = asyncio.ensure_future(flights.run("k", compute, 1.0))
        await asyncio.sleep(0.01)
        only.cancel()
        await asyncio.sleep(0.15)
        return len(flights)
    assert asyncio.run(scenario()) == 0 and finished == []


def test_errors_reach_every_caller() -> None:
    flights = SingleFlight()

    async def compute() -> bytes:
        await asyncio.sleep(0.02)
        raise InvalidArgument("x", "bad")

    async def scenario():
        return await asyncio.gather(*(flights.run("k", compute, 1.0) for _ in range(3)),
                                    return_exceptions=True)
    assert all(isinstance(r, InvalidArgument) for r in asyncio.run(scenario()))


# --- circuit breaker -------------------------------------------------------------------

def _count(event: str) -> float:
    return CACHE_EVENTS.labels(event)._value.get()


def test_a_dead_redis_opens_the_breaker_and_is_not_called_while_open() -> None:
    cache = Cache("redis://127.0.0.1:1/0", ttl=60, timeout=0.05, breaker_seconds=0.3,
                  breaker_failures=3)
    errors, bypassed = _count("error"), _count("bypass")

    async def scenario():
        first = await cache.get("k")
        answers = [await cache.get("k", 7) for _ in range(50)]
        await cache.put("k", "", b"v")
        await asyncio.sleep(0.35)
        usable_again = cache._usable()
        await cache.close()
        return first, answers, usable_again
    first, answers, usable_again = asyncio.run(scenario())
    assert first == (None, None) and answers == [(None, None)] * 50 and usable_again
    assert _count("error") - errors == 3 and _count("bypass") - bypassed == 48


def test_the_breaker_opens_on_consecutive_failures_only(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(breaker_module.time, "monotonic", lambda: clock[0])
    breaker = Breaker(seconds=1.0, threshold=3)
    for _ in range(5):   # isolated failures between successes: never open
        assert not breaker.failed() and not breaker.failed()
        breaker.succeeded()
        assert breaker.closed()
    assert not breaker.failed() and not breaker.failed() and breaker.failed()
    assert not breaker.closed()
    clock[0] += 0.99
    assert not breaker.closed()
    clock[0] += 0.02
    assert breaker.closed()
    assert not breaker.failed()   # the count starts again after opening
    breaker.failed()
    breaker.reset()
    assert breaker.closed() and not breaker.failed()
    with pytest.raises(ValueError):
        Breaker(threshold=0)


def test_profile_vectors_are_reused_per_cell_and_model_version() -> None:
    down, version = FakeDownstream(), ["fusion@1"]
    pipeline = recommender(down, versions=lambda: version[0])

    async def ask(age: int, user_id: int | None = None) -> None:
        profile = common_pb2.Profile(age=age, gender="F", occupation=4)
        if user_id:
            profile.user_id = user_id
        query, _ = recommend_query(pb.RecommendRequest(profile=profile, include_seen=bool(
            user_id)))
        await pipeline.rank(query, Deadline.start(1.0, 1.0))

    async def scenario() -> list:
        await ask(25)
        await ask(30)          # the same age bucket (25-34): the same vector
        await ask(40)          # another bucket
        await ask(30, 7)       # a known user: their own vector
        version[0] = "fusion@2"
        await ask(25)          # a new model version
        return [c for c in down.calls if c[0] == "embed_profile"]
    assert len(asyncio.run(scenario())) == 4


def test_added_movies_get_vectors_in_every_models_live_collection() -> None:
    """UpsertMovies stores the movies, then indexes the ones no model knows: the
    embedder's content vectors go to each model's collection with year and genres."""
    from movierec.apps.gateway.servicer import index_new_movies

    down = FakeDownstream()
    stored = asyncio.run(down.upsert_movies([
        common_pb2.Movie(title="Brand New", year=2024, genres=["Drama"]),
        common_pb2.Movie(movie_id=3, title="Movie 3", year=1990)], None))

    async def index():
        await index_new_movies(down, stored, Deadline.start(1.0, 1.0))
    asyncio.run(index())
    new = stored[0].movie_id
    assert ("embed_movies", (new, 3)) in down.calls
    assert ("upsert_vectors", "fusion", "f1", (new,)) in down.calls
    assert ("upsert_vectors", "pinsage", "p1", (new,)) in down.calls
