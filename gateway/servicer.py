"""gRPC servicer of ``movierec.gateway.v1.Gateway``, the public API.

Translates requests into :class:`~movierec.apps.gateway.query.Query` objects, serves
``Recommend``/``SimilarMovies`` from the Redis cache when it can (single flight on
misses), runs the pipeline otherwise, passes ``SearchMovies``, ``ListPopular`` and
``ListGenres`` through to the catalog and writes ``RecordRating``, ``UpsertUser`` and
``DeleteUser`` through it, then drops that user's cached answers; ``UpsertMovies`` goes
to the catalog too (the movie snapshot follows the catalog's version).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import grpc
import prometheus_client

from movierec import limits, paging, validation
from movierec.apps.gateway.backends import Downstream, ModelVersions
from movierec.apps.gateway.cache import CACHE_EVENTS, Cache, cache_key
from movierec.apps.gateway.flight import SingleFlight
from movierec.apps.gateway.movies import MovieSnapshot
from movierec.apps.gateway.query import genre_filter, recommend_query, similar_query
from movierec.apps.gateway.recommend import Recommender
from movierec.catalog.v1 import catalog_pb2
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.gateway.v1 import gateway_pb2_grpc
from movierec.retriever.v1 import retriever_pb2
from movierec.server.budget import Deadline
from movierec.server.factory import registrar
from movierec.server.metrics import BUCKETS

MAX_LIST_POPULAR = limits.MAX_TOP_K
#: answered Recommend calls per query kind (gateway/kinds.py) and cache outcome
RECOMMEND_LATENCY = prometheus_client.Histogram(
    "movierec_gateway_recommend_seconds", "Answered Recommend calls by query kind",
    ["kind", "cache"], buckets=BUCKETS)


#: ``cached = true`` (field 3 of RecommendResponse and SimilarMoviesResponse) as wire
#: bytes: appended to a cached answer's bytes, it sets the flag without a parse (protobuf
#: takes the last value of a repeated scalar field).
CACHED_FLAG = b"\x18\x01"
#: Registers a GatewayServicer on a server: ``Recommend`` and ``SimilarMovies`` answer
#: with the bytes they serialized (what the generated registrar would serialize again).
register = registrar(pb.DESCRIPTOR.services_by_name["Gateway"], ("Recommend", "SimilarMovies"))


async def index_new_movies(down: Downstream, movies: list, deadline: Deadline) -> None:
    """Make stored movies no model trained on searchable: the embedder's content vectors
    (one per model) go into each model's live collection with the movie's year and genres.
    The answer waits for it, so a movie is recommendable when UpsertMovies returns; a
    failure here fails the call, and repeating the call (idempotent) finishes the job."""
    by_id = {m.movie_id: m for m in movies}
    groups: dict[tuple[str, str], list[retriever_pb2.MovieRow]] = {}
    for e in await down.embed_movies(movies, deadline):
        movie = by_id[e.movie_id]
        groups.setdefault((e.model, e.model_version), []).append(retriever_pb2.MovieRow(
            movie_id=e.movie_id, vector=e.vector, year=movie.year, genres=movie.genres))
    await asyncio.gather(*(down.upsert_vectors(model, version, rows, deadline)
                           for (model, version), rows in groups.items()))


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    """The public API. ``Recommend`` and ``SimilarMovies`` answer with their serialized
    bytes: a page is serialised once on a miss (the same bytes go to Redis and to the
    caller) and never on a hit."""

    def __init__(self, backends: Downstream, cache: Cache, versions: ModelVersions,
                 call_timeout: float, movies: MovieSnapshot | None = None) -> None:
        self.b = backends
        self.cache = cache
        self.versions = versions
        self.call_timeout = call_timeout
        self.movies = movies or MovieSnapshot(backends)
        self.recommender = Recommender(backends, self.movies, versions=lambda: versions.value)
        self.flights = SingleFlight(lambda event: CACHE_EVENTS.labels(event).inc())

    def answer_version(self) -> str:
        """What an answer depends on besides the request: the model versions and the
        catalog's version (a movie added or edited), so no cached answer outlives them."""
        return f"{self.versions.value}|catalog@{self.movies.version}"

    def _deadline(self, context: grpc.aio.ServicerContext) -> Deadline:
        return Deadline.start(context.time_remaining(), self.call_timeout)

    async def _cached(self, kind: str, payload: bytes, user_id: int | None,
                      compute: Callable[[], Awaitable[bytes]], deadline: Deadline) -> bytes:
        """The answer's bytes, from Redis (with the cached flag) or computed once."""
        key = cache_key(kind, payload, self.answer_version(), user_id)
        hit, generation = await self.cache.get(key, user_id)
        if hit is not None:
            return hit + CACHED_FLAG

        async def run() -> bytes:
            value = await compute()
            await self.cache.put(key, generation, value, user_id)
            return value
        if generation is None and user_id:
            # No generation (Redis down): a flight that began before a write could end
            # after it, so answers about a user are not shared then.
            return await run()
        flight = key if generation is None else f"{key}{generation}"
        return await self.flights.run(flight, run, deadline.left())

    async def Recommend(self, request, context) -> bytes:  # noqa: N802
        started = time.perf_counter()
        query, identity = recommend_query(request)
        deadline = self._deadline(context)
        computed = False

        async def compute() -> bytes:
            nonlocal computed
            computed = True
            ranking = await self.recommender.rank(query, deadline)
            items, more = await self.recommender.explain(ranking, query.page_start,
                                                         query.top_k, deadline)
            token = (paging.encode(query.page_start + query.top_k, identity.fingerprint)
                     if more else "")
            return pb.RecommendResponse(items=items, next_page_token=token,
                                        model_version=f"{ranking.model}@{ranking.version}"
                                        if ranking.version else ranking.model,
                                        unknown_movie_ids=ranking.unknown).SerializeToString()
        payload = identity.payload + query.page_start.to_bytes(4, "big")
        answer = await self._cached("rec", payload, query.user_id, compute, deadline)
        RECOMMEND_LATENCY.labels(query.kind, "miss" if computed else "hit").observe(
            time.perf_counter() - started)
        return answer

    async def SimilarMovies(self, request, context) -> bytes:  # noqa: N802
        similar, identity = similar_query(request)
        deadline = self._deadline(context)

        async def compute() -> bytes:
            ranking = await self.recommender.similar(similar, deadline)
            items, _ = await self.recommender.explain(ranking, 0, similar.top_k, deadline)
            return pb.SimilarMoviesResponse(
                items=items, model_version=f"{similar.model}@{ranking.version}"
            ).SerializeToString()
        return await self._cached("sim", identity.payload, None, compute, deadline)

    async def SearchMovies(self, request, context):  # noqa: N802
        reply = await self.b.search_movies(catalog_pb2.SearchMoviesRequest(
            query=request.query, genres=request.genres, years=request.years,
            limit=request.limit, page_token=request.page_token), self._deadline(context))
        return pb.SearchMoviesResponse(movies=[m.movie for m in reply.movies],
                                       next_page_token=reply.next_page_token)

    async def ListPopular(self, request, context):  # noqa: N802
        genres = genre_filter(request.genres)
        limit = validation.limit("limit", request.limit, 20, MAX_LIST_POPULAR)
        popular = await self.b.popular(genres, limit, [], self._deadline(context))
        return pb.ListPopularResponse(movies=[pb.PopularMovie(movie=m, ratings=int(count))
                                              for m, count in popular])

    async def ListGenres(self, request, context):  # noqa: N802
        return pb.ListGenresResponse(genres=await self.b.genres(self._deadline(context)))

    async def RecordRating(self, request, context):  # noqa: N802
        user_id = validation.positive_id("user_id", request.user_id)
        movie_id = validation.positive_id("movie_id", request.movie_id)
        rating = validation.rating("rating", request.rating)
        r = await self.b.record_rating(user_id, movie_id, rating, self._deadline(context))
        await self.cache.invalidate_user(user_id)
        return pb.RecordRatingResponse(user_id=r.user_id, movie_id=r.movie_id, rating=r.rating,
                                       timestamp=r.timestamp)

    async def UpsertMovies(self, request, context):  # noqa: N802
        validation.movies("movies", request.movies)
        deadline = self._deadline(context)
        stored = await self.b.upsert_movies(request.movies, deadline)
        await index_new_movies(self.b, stored, deadline)
        with contextlib.suppress(Exception):   # else the background refresh does it (1 s)
            await self.movies.refresh()       # this replica's snapshot and cache keys move
        return pb.UpsertMoviesResponse(movies=stored)

    async def UpsertUser(self, request, context):  # noqa: N802
        validation.user_profile(request.user_id, request.age, request.gender,
                                request.occupation)
        reply = await self.b.upsert_user(catalog_pb2.UpsertUserRequest(
            user_id=request.user_id, age=request.age, gender=request.gender,
            occupation=request.occupation), self._deadline(context))
        await self.cache.invalidate_user(reply.user.user_id)
        u = reply.user
        return pb.UpsertUserResponse(user_id=u.user_id, age_bucket=u.age, gender=u.gender,
                                     occupation=u.occupation, created=reply.created)

    async def DeleteUser(self, request, context):  # noqa: N802
        user_id = validation.positive_id("user_id", request.user_id)
        deleted = await self.b.delete_user(user_id, self._deadline(context))
        await self.cache.invalidate_user(user_id)
        return pb.DeleteUserResponse(user_id=user_id, ratings_deleted=deleted)
