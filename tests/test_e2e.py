"""The whole recommendation path: four service processes over real stores.

The ``stack`` fixture (conftest.py, tests/stack_fixture.py) trains both models on a
small synthetic data set, loads the catalog and vectors into real PostgreSQL and
Milvus, and runs catalog, retriever, embedder and gateway as separate
``movierec serve`` processes, as ``make run`` starts them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from stack_fixture import DATASET, Stack

from movierec.common.v1 import common_pb2
from movierec.data.source import load_dataset
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.gateway.v1 import gateway_pb2_grpc
from movierec.models import reasons
from movierec.models import registry as registry_models
from movierec.models.artifact import latest, read_item_vectors

PROFILE = common_pb2.Profile(age=25, gender="F", occupation=4)


def call(stack: Stack, method: str, request, timeout: float = 5.0):
    async def go():
        async with grpc.aio.insecure_channel(stack.gateway) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            return await getattr(stub, method)(request, timeout=timeout)
    return asyncio.run(go())


def error(stack: Stack, method: str, request, timeout: float = 5.0):
    with pytest.raises(grpc.RpcError) as info:
        call(stack, method, request, timeout)
    return info.value.code(), info.value.details()


def test_profile_query(stack: Stack) -> None:
    reply = call(stack, "Recommend", pb.RecommendRequest(profile=PROFILE, top_k=5))
    assert len(reply.items) == 5 and reply.model_version.startswith("fusion@")
    assert all(1 <= i.score <= 5 and i.title for i in reply.items)
    assert "predicted" in reply.items[0].reason and "women aged 25-34" in reply.items[0].reason
    # the order is the model's ranking (what people like this watch and like); the score
    # shown is the rating it predicts, so it need not fall with the rank


def _served_reasons(stack: Stack, liked: list[int]) -> dict[int, int]:
    """Per movie, the liked movie its artifact's co-liked row names first (0: none)."""
    path = latest("pinsage", Path(stack.env["MOVIEREC_ARTIFACTS"]))
    ids, _ = read_item_vectors(path)
    table = reasons.load(path)
    return {int(m): reasons.pick_reason(row, set(liked)) for m, row in zip(ids, table,
                                                                           strict=True)}


def test_liked_query_excludes_liked_and_explains(stack: Stack) -> None:
    """Each item names the liked movie co-rating ties it to, else a genre or taste."""
    liked = [1, 2, 3]
    reply = call(stack, "Recommend", pb.RecommendRequest(
        liked=common_pb2.LikedMovies(movie_ids=liked), top_k=8))
    assert len(reply.items) == 8 and reply.model_version.startswith("pinsage@")
    assert not {i.movie_id for i in reply.items} & set(liked)
    movies = load_dataset(DATASET).movies
    titles = {int(m): f"{t} ({int(y)})" for m, t, y in zip(movies["movie_id"], movies["title"],
                                                           movies["year"], strict=True)}
    expected = _served_reasons(stack, liked)
    for item in reply.items:
        named = expected[item.movie_id]
        if named:
            assert item.reason == f"because you liked {titles[named]}"
        else:
            assert item.reason.startswith(("because you like ", "close to your taste"))
    assert any(expected[i.movie_id] for i in reply.items)


def test_user_queries_known_and_unknown(stack: Stack) -> None:
    known = call(stack, "Recommend", pb.RecommendRequest(user_id=3, top_k=5))
    history_model = registry_models.for_input("history").name
    assert known.model_version.startswith(f"{history_model}@") and len(known.items) == 5
    assert all(i.reason.startswith("because you liked") for i in known.items)
    rated = {r.movie_id for r in load_dataset(DATASET).ratings.itertuples() if r.user_id == 3}
    assert not rated & {i.movie_id for i in known.items}   # seen movies hidden by default
    shown = call(stack, "Recommend", pb.RecommendRequest(user_id=3, top_k=50,
                                                         include_seen=True))
    assert rated & {i.movie_id for i in shown.items}
    code, details = error(stack, "Recommend", pb.RecommendRequest(user_id=99_999, top_k=5))
    assert code == grpc.StatusCode.NOT_FOUND and "user 99999 does not exist" in details
    ahead = call(stack, "Recommend", pb.RecommendRequest(next_for_user_id=3, top_k=5))
    sequence_model = registry_models.for_input("sequence").name
    assert ahead.model_version.startswith(f"{sequence_model}@") and len(ahead.items) == 5
    assert not rated & {i.movie_id for i in ahead.items}
    code, _ = error(stack, "Recommend", pb.RecommendRequest(next_for_user_id=99_999, top_k=5))
    assert code == grpc.StatusCode.NOT_FOUND


def test_filters_and_exclusions(stack: Stack) -> None:
    first = call(stack, "Recommend", pb.RecommendRequest(profile=PROFILE, top_k=3))
    banned = [i.movie_id for i in first.items]
    reply = call(stack, "Recommend", pb.RecommendRequest(
        profile=PROFILE, top_k=10, genres=["Drama", "Comedy"], exclude_movie_ids=banned))
    assert len(reply.items) == 10
    assert all({"Drama", "Comedy"} & set(i.genres) for i in reply.items)
    assert not {i.movie_id for i in reply.items} & set(banned)


def test_paging_never_repeats(stack: Stack) -> None:
    request = pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=[5, 6]), top_k=7)
    seen, token = [], ""
    for _ in range(4):
        request.page_token = token
        reply = call(stack, "Recommend", request)
        seen += [i.movie_id for i in reply.items]
        token = reply.next_page_token
        assert token
    assert len(seen) == 28 == len(set(seen))
    request.page_token = token
    request.top_k = 3
    code, details = error(stack, "Recommend", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("page_token")


def test_second_call_is_cached(stack: Stack) -> None:
    request = pb.RecommendRequest(profile=common_pb2.Profile(age=40, gender="M", occupation=12),
                                  top_k=4)
    first, second = call(stack, "Recommend", request), call(stack, "Recommend", request)
    assert not first.cached and second.cached
    assert [i.movie_id for i in first.items] == [i.movie_id for i in second.items]


def test_record_rating_invalidates_and_seen_movies_stay_hidden(stack: Stack) -> None:
    request = pb.RecommendRequest(user_id=7, top_k=5)
    first = call(stack, "Recommend", request)
    assert call(stack, "Recommend", request).cached
    target = first.items[0].movie_id
    stored = call(stack, "RecordRating", pb.RecordRatingRequest(user_id=7, movie_id=target,
                                                                rating=5))
    assert (stored.movie_id, stored.rating) == (target, 5)
    after = call(stack, "Recommend", request)
    assert not after.cached and target not in {i.movie_id for i in after.items}


def test_liked_answers_need_no_catalog_call(stack: Stack) -> None:
    """Titles come from the gateway's snapshot: with the catalog down a liked-ids answer
    is still served, whole."""
    stack.stop("catalog")
    try:
        reply = call(stack, "Recommend", pb.RecommendRequest(
            liked=common_pb2.LikedMovies(movie_ids=[21, 22]), top_k=4))
    finally:
        stack.restart("catalog")
        _until_ok(lambda: call(stack, "ListGenres", pb.ListGenresRequest()))
    assert len(reply.items) == 4 and all(i.title and i.year for i in reply.items)


def _until_ok(attempt, seconds: float = 5.0):
    """``attempt()`` once the gateway has reconnected (its backoff is <= 1 s)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return attempt()
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_similar_and_search(stack: Stack) -> None:
    similar = call(stack, "SimilarMovies", pb.SimilarMoviesRequest(movie_id=10, top_k=5))
    assert len(similar.items) == 5 and 10 not in {i.movie_id for i in similar.items}
    assert similar.items[0].reason.startswith("similar to ")
    word = load_dataset(DATASET).movies.title.iloc[0].split()[0]
    found = call(stack, "SearchMovies", pb.SearchMoviesRequest(query=word, limit=5))
    assert found.movies and all(word.lower() in m.title.lower() for m in found.movies)
    code, _ = error(stack, "SimilarMovies", pb.SimilarMoviesRequest(movie_id=987_654))
    assert code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("request_", "field"), [
    (pb.RecommendRequest(top_k=5), "query"),
    (pb.RecommendRequest(profile=PROFILE, top_k=1000), "top_k"),
    (pb.RecommendRequest(profile=common_pb2.Profile(age=25, gender="X", occupation=1)),
     "profile.gender"),
    (pb.RecommendRequest(profile=common_pb2.Profile(age=0, gender="F", occupation=1)),
     "profile.age"),
    (pb.RecommendRequest(liked=common_pb2.LikedMovies()), "liked.movie_ids"),
    (pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=[999_999])), "liked.movie_ids"),
    (pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=[1]), include_seen=True),
     "include_seen"),
    (pb.RecommendRequest(user_id=-1), "user_id"),
    (pb.RecommendRequest(profile=PROFILE, genres=["Nope"]), "genres"),
])
def test_malformed_requests_are_invalid_argument(stack: Stack, request_, field) -> None:
    code, details = error(stack, "Recommend", request_)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field), details


def test_reflection_serves_the_gateway(stack: Stack) -> None:
    async def go():
        async with grpc.aio.insecure_channel(stack.gateway) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for reply in stub.ServerReflectionInfo(iter([request])):
                return {s.name for s in reply.list_services_response.service}
    assert "movierec.gateway.v1.Gateway" in asyncio.run(go())


def test_every_query_kind_through_reflection_alone(stack: Stack) -> None:
    """What grpcurl and ghz do: learn the schema from the server, then call it."""
    from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

    async def schema() -> descriptor_pool.DescriptorPool:
        async with grpc.aio.insecure_channel(stack.gateway) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="movierec.gateway.v1.Gateway")
            async for reply in stub.ServerReflectionInfo(iter([request])):
                files = reply.file_descriptor_response.file_descriptor_proto
        pool = descriptor_pool.DescriptorPool()
        pending = [descriptor_pb2.FileDescriptorProto.FromString(f) for f in files]
        while pending:  # add dependencies first
            ready = [f for f in pending if all(pool_has(pool, d) for d in f.dependency)]
            for f in ready:
                pool.Add(f)
            pending = [f for f in pending if f not in ready]
        return pool

    def pool_has(pool, name: str) -> bool:
        try:
            pool.FindFileByName(name)
            return True
        except KeyError:
            return False

    pool = asyncio.run(schema())
    method = pool.FindServiceByName("movierec.gateway.v1.Gateway").methods_by_name["Recommend"]
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    bodies = [{"profile": {"age": 30, "gender": "M", "occupation": 7}, "topK": 3},
              {"liked": {"movieIds": [1, 2]}, "topK": 3}, {"userId": 4, "topK": 3}]

    async def ask(body: dict):
        async with grpc.aio.insecure_channel(stack.gateway) as channel:
            call = channel.unary_unary("/movierec.gateway.v1.Gateway/Recommend",
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=response_cls.FromString)
            return await call(json_format.ParseDict(body, request_cls()), timeout=5)
    replies = [asyncio.run(ask(b)) for b in bodies]
    assert all(len(r.items) == 3 and r.items[0].title for r in replies)
    assert [r.model_version.split("@")[0] for r in replies] == [
        registry_models.for_input(kind).name for kind in ("profile", "liked", "history")]


def test_redis_down_never_fails_a_request(stack: Stack) -> None:
    request = pb.RecommendRequest(profile=common_pb2.Profile(age=60, gender="F", occupation=13))
    stack.redis.stop()
    try:
        start = time.monotonic()
        replies = [call(stack, "Recommend", request) for _ in range(3)]
        assert all(r.items and not r.cached for r in replies)
        assert time.monotonic() - start < 3
        stored = call(stack, "RecordRating", pb.RecordRatingRequest(user_id=9, movie_id=1,
                                                                    rating=4))
        assert stored.rating == 4
    finally:
        stack.redis.start()
    time.sleep(1.2)  # the breaker lets Redis back in
    call(stack, "Recommend", request)
    assert call(stack, "Recommend", request).cached


@pytest.mark.parametrize("service", ["catalog", "retriever"])
def test_downstream_loss_is_unavailable_then_recovers(stack: Stack, service: str) -> None:
    """A request that needs the lost service fails UNAVAILABLE within its deadline (a
    user id needs the catalog; a liked list does not: its titles come from the gateway's
    movie snapshot), then succeeds once the service is back."""
    request = (pb.RecommendRequest(user_id=5, top_k=3) if service == "catalog" else
               pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=[11, 12]), top_k=3))
    request.exclude_movie_ids.append(100 + len(service))   # a fresh cache key per service
    stack.stop(service)
    try:
        start = time.monotonic()
        code, _ = error(stack, "Recommend", request, timeout=3.0)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - start < 3.2
    finally:
        stack.restart(service)
    assert _until_ok(lambda: call(stack, "Recommend", request)).items


def test_an_added_movie_is_recommendable_when_the_call_returns(stack: Stack) -> None:
    """UpsertMovies: stored in the catalog, embedded from its features by every model,
    inserted into both live collections; a genre-filtered Recommend of either model and
    SimilarMovies find it right away (the only movie of its genre)."""
    movie = common_pb2.Movie(title="Harbor Lights Returns", year=2001, genres=["unknown"])
    before = pb.RecommendRequest(profile=PROFILE, genres=["unknown"], top_k=3)
    assert call(stack, "Recommend", before).items == []       # now cached, and empty
    added = call(stack, "UpsertMovies", pb.UpsertMoviesRequest(movies=[movie])).movies[0]
    assert added.movie_id > 200 and added.title == movie.title
    for query in (pb.RecommendRequest(profile=PROFILE, genres=["unknown"], top_k=3),
                  pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=[4, 5]),
                                      genres=["unknown"], top_k=3)):
        reply = call(stack, "Recommend", query)     # the cached empty answer is gone
        assert [(i.movie_id, i.title, i.year) for i in reply.items] == [
            (added.movie_id, movie.title, 2001)] and not reply.cached
    similar = call(stack, "SimilarMovies", pb.SimilarMoviesRequest(movie_id=added.movie_id,
                                                                   top_k=4))
    assert len(similar.items) == 4 and added.movie_id not in {i.movie_id for i in similar.items}
    again = call(stack, "UpsertMovies", pb.UpsertMoviesRequest(movies=[movie])).movies[0]
    assert again.movie_id == added.movie_id            # idempotent: the same movie


def _z(scores):
    return (scores - scores.mean()) / scores.std(ddof=1)


def test_profile_and_likes_rank_by_both_models_standardized_scores(stack: Stack) -> None:
    """Recommend{profile_and_liked}: the liked movies are left out, the order is that of
    z(PinSage liked score) + w(k) z(fusion profile score) over the catalog, computed here
    from the artifacts' own vectors, and each item is explained; no like: the profile's."""
    import numpy as np

    from movierec.models import onboarding
    from movierec.models.fusion.inference import FusionEncoder
    from movierec.models.pinsage.encoder import PinSageEncoder

    root = Path(stack.env["MOVIEREC_ARTIFACTS"])
    liked = [1, 2, 3]
    reply = call(stack, "Recommend", pb.RecommendRequest(profile_and_liked=pb.ProfileAndLiked(
        profile=PROFILE, liked=common_pb2.LikedMovies(movie_ids=liked)), top_k=10))
    assert reply.model_version.startswith("fusion@") and "+pinsage@" in reply.model_version
    fusion_ids, fusion_vectors = read_item_vectors(latest("fusion", root))
    pinsage_ids, pinsage_vectors = read_item_vectors(latest("pinsage", root))
    assert list(fusion_ids) == list(pinsage_ids)
    profile = FusionEncoder.load(latest("fusion", root)).encode_one(25, "F", 4)
    likes = PinSageEncoder.load(latest("pinsage", root)).embed_liked(liked)
    score = _z(pinsage_vectors @ likes) + onboarding.weight(3) * _z(fusion_vectors @ profile)
    order = [int(fusion_ids[i]) for i in np.argsort(-score) if fusion_ids[i] not in liked]
    assert [i.movie_id for i in reply.items] == order[:10]
    assert all(i.reason.startswith(("because you liked", "predicted")) for i in reply.items)
    alone = call(stack, "Recommend", pb.RecommendRequest(profile_and_liked=pb.ProfileAndLiked(
        profile=PROFILE), top_k=5))
    profile_only = call(stack, "Recommend", pb.RecommendRequest(profile=PROFILE, top_k=5))
    assert [i.movie_id for i in alone.items] == [i.movie_id for i in profile_only.items]
    code, details = error(stack, "Recommend", pb.RecommendRequest(
        profile_and_liked=pb.ProfileAndLiked(profile=PROFILE, liked=common_pb2.LikedMovies(
            movie_ids=[999_999]))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "liked" in details


def test_profile_and_likes_are_cached_paged_and_filtered(stack: Stack) -> None:
    """The combined query goes through the same cache, pages and filters as the others."""
    request = pb.RecommendRequest(profile_and_liked=pb.ProfileAndLiked(
        profile=common_pb2.Profile(age=35, gender="M", occupation=7),
        liked=common_pb2.LikedMovies(movie_ids=[4, 9])), top_k=6, genres=["Drama", "Comedy"],
        exclude_movie_ids=[10, 11])
    first, again = call(stack, "Recommend", request), call(stack, "Recommend", request)
    assert not first.cached and again.cached and first.next_page_token
    request.page_token = first.next_page_token
    second = call(stack, "Recommend", request)
    shown = [i for reply in (first, second) for i in reply.items]
    assert len(shown) == 12 == len({i.movie_id for i in shown})
    assert all({"Drama", "Comedy"} & set(i.genres) for i in shown)
    assert not {i.movie_id for i in shown} & {4, 9, 10, 11}
