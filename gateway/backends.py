"""The gateway's downstream services behind one small interface, each call with a deadline.

:class:`Downstream` is what the recommendation pipeline needs, in the pipeline's own
terms (a user's ratings, a query vector, hits, movies); :class:`Backends` implements
it over gRPC with one channel per service, and tests pass a fake. Reads are idempotent
and retried on UNAVAILABLE within the deadline; writes are never retried. Every call's
deadline is the smaller of the configured per-call timeout and what is left of the
incoming request's deadline (:class:`movierec.server.budget.Deadline`, the one deadline
rule every service uses).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from movierec.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from movierec.common.v1 import common_pb2
from movierec.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from movierec.retriever.v1 import retriever_pb2, retriever_pb2_grpc
from movierec.server import client
from movierec.server.budget import Deadline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Found:
    """One ranked movie: its score, the liked movie that explains it (0: none) and the
    model's reading of its score (None: the model has none)."""

    movie_id: int
    score: float
    reason: int = 0
    reading: float | None = None


@dataclass(frozen=True)
class Hits:
    """A search's answer, best first, and the version searched."""

    items: list[Found]
    version: str


@dataclass(frozen=True)
class SearchCall:
    """One search: a query vector (or a movie's own vector) and what to explain."""

    model: str
    top_k: int
    vector: Sequence[float] = ()
    like_movie_id: int = 0          # search with this movie's stored vector instead
    exclude: Sequence[int] = ()
    genres: tuple[str, ...] = ()
    liked: Sequence[int] = ()       # what Found.reason may name
    reading: common_pb2.Reading | None = None
    version: str = ""               # the embedder's version: refused if another is live
    #: more query vectors whose inner products are added (SearchRequest.also)
    also: Sequence[embedder_pb2.Embedding] = ()


class Downstream(Protocol):
    """Everything the pipeline asks of the embedder, retriever and catalog."""

    async def embed_profile(self, profile: common_pb2.Profile,
                            deadline: Deadline) -> embedder_pb2.Embedding: ...

    async def embed_liked(self, liked: common_pb2.LikedMovies, deadline: Deadline
                          ) -> tuple[embedder_pb2.Embedding, list[int]]: ...

    async def embed_history(self, history: common_pb2.RatedMovies, deadline: Deadline,
                            purpose: int = embedder_pb2.HISTORY_PURPOSE_TASTE
                            ) -> embedder_pb2.Embedding | None: ...

    async def embed_onboarding(self, profile: common_pb2.Profile,
                               liked: common_pb2.LikedMovies, deadline: Deadline
                               ) -> tuple[list[embedder_pb2.Embedding], list[int]]: ...

    async def user(self, user_id: int, limit: int, deadline: Deadline
                   ) -> tuple[catalog_pb2.User, common_pb2.RatedMovies] | None: ...

    async def search(self, call: SearchCall, deadline: Deadline) -> Hits: ...

    async def movies(self, movie_ids: list[int],
                     deadline: Deadline) -> dict[int, common_pb2.Movie]: ...

    async def list_movies(self, after: int, limit: int, deadline: Deadline
                          ) -> tuple[list[common_pb2.Movie], int]: ...

    async def catalog_version(self, deadline: Deadline) -> int: ...

    async def popular(self, genres: tuple[str, ...], limit: int, exclude: list[int],
                      deadline: Deadline) -> list[tuple[common_pb2.Movie, float]]: ...

    async def search_movies(self, request: catalog_pb2.SearchMoviesRequest,
                            deadline: Deadline) -> catalog_pb2.SearchMoviesResponse: ...

    async def genres(self, deadline: Deadline) -> list[str]: ...

    async def record_rating(self, user_id: int, movie_id: int, rating: int,
                            deadline: Deadline) -> catalog_pb2.Rating: ...

    async def upsert_movies(self, movies: Sequence[common_pb2.Movie],
                            deadline: Deadline) -> list[common_pb2.Movie]: ...

    async def upsert_user(self, request: catalog_pb2.UpsertUserRequest,
                          deadline: Deadline) -> catalog_pb2.UpsertUserResponse: ...

    async def delete_user(self, user_id: int, deadline: Deadline) -> int: ...

    async def embed_movies(self, movies: Sequence[common_pb2.Movie], deadline: Deadline
                           ) -> list[embedder_pb2.MovieEmbedding]: ...

    async def upsert_vectors(self, model: str, version: str,
                             rows: Sequence[retriever_pb2.MovieRow],
                             deadline: Deadline) -> None: ...


def _missing(exc: grpc.aio.AioRpcError) -> bool:
    return exc.code() == grpc.StatusCode.NOT_FOUND


class Backends:
    """:class:`Downstream` over gRPC: stubs of the embedder, retriever and catalog."""

    def __init__(self, embedder_addr: str, retriever_addr: str, catalog_addr: str,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.channels = [client.channel(a, credentials=credentials)
                         for a in (embedder_addr, retriever_addr, catalog_addr)]
        self.embedder = embedder_pb2_grpc.EmbedderStub(self.channels[0])
        self.retriever = retriever_pb2_grpc.RetrieverStub(self.channels[1])
        self.catalog = catalog_pb2_grpc.CatalogStub(self.channels[2])

    async def read(self, method, request, deadline: Deadline, target: str):
        return await client.call(method, request, timeout=deadline.timeout(), target=target,
                                 idempotent=True)

    async def write(self, method, request, deadline: Deadline, target: str):
        return await client.call(method, request, timeout=deadline.timeout(), target=target)

    async def embed_profile(self, profile, deadline):
        reply = await self.read(self.embedder.EmbedProfile, embedder_pb2.EmbedProfileRequest(
            profile=profile), deadline, "embedder")
        return reply.embedding

    async def embed_liked(self, liked, deadline):
        reply = await self.read(self.embedder.EmbedLikedMovies,
                                embedder_pb2.EmbedLikedMoviesRequest(liked=liked), deadline,
                                "embedder")
        return reply.embedding, list(reply.unknown_movie_ids)

    async def embed_onboarding(self, profile, liked, deadline):
        reply = await self.read(self.embedder.EmbedOnboarding,
                                embedder_pb2.EmbedOnboardingRequest(profile=profile, liked=liked),
                                deadline, "embedder")
        return list(reply.parts), list(reply.unknown_movie_ids)

    async def embed_history(self, history, deadline,
                            purpose=embedder_pb2.HISTORY_PURPOSE_TASTE):
        try:
            reply = await self.read(self.embedder.EmbedHistory,
                                    embedder_pb2.EmbedHistoryRequest(history=history,
                                                                     purpose=purpose),
                                    deadline, "embedder")
        except grpc.aio.AioRpcError as exc:
            if _missing(exc):  # none of the rated movies is known to the model
                return None
            raise
        return reply.embedding

    async def user(self, user_id, limit, deadline):
        try:
            reply = await self.read(self.catalog.GetUserHistory,
                                    catalog_pb2.GetUserHistoryRequest(user_id=user_id,
                                                                      limit=limit),
                                    deadline, "catalog")
        except grpc.aio.AioRpcError as exc:
            if _missing(exc):
                return None
            raise
        return reply.user, reply.history

    async def search(self, call, deadline):
        request = retriever_pb2.SearchRequest(
            model=call.model, vector=call.vector, top_k=call.top_k, exclude_ids=call.exclude,
            genres=call.genres, model_version=call.version, liked_ids=call.liked,
            like_movie_id=call.like_movie_id, reading=call.reading,
            also=[retriever_pb2.QueryPart(model=e.model, vector=e.vector,
                                          model_version=e.model_version) for e in call.also])
        reply = await self.read(self.retriever.Search, request, deadline, "retriever")
        return Hits([Found(h.movie_id, h.score, h.reason_movie_id,
                           h.reading if h.HasField("reading") else None) for h in reply.hits],
                    reply.model_version)

    async def movies(self, movie_ids, deadline):
        reply = await self.read(self.catalog.GetMovies, catalog_pb2.GetMoviesRequest(
            movie_ids=movie_ids), deadline, "catalog")
        return {m.movie_id: m for m in reply.movies}

    async def list_movies(self, after, limit, deadline):
        reply = await self.read(self.catalog.ListMovies, catalog_pb2.ListMoviesRequest(
            after_movie_id=after, limit=limit), deadline, "catalog")
        return list(reply.movies), reply.catalog_version

    async def catalog_version(self, deadline):
        reply = await self.read(self.catalog.GetCatalogVersion,
                                catalog_pb2.GetCatalogVersionRequest(), deadline, "catalog")
        return reply.catalog_version

    async def popular(self, genres, limit, exclude, deadline):
        reply = await self.read(self.catalog.ListPopular, catalog_pb2.ListPopularRequest(
            genres=genres, limit=limit, exclude_movie_ids=exclude), deadline, "catalog")
        return [(m.movie, m.score) for m in reply.movies]

    async def search_movies(self, request, deadline):
        return await self.read(self.catalog.SearchMovies, request, deadline, "catalog")

    async def genres(self, deadline):
        reply = await self.read(self.catalog.ListGenres, catalog_pb2.ListGenresRequest(),
                                deadline, "catalog")
        return list(reply.genres)

    async def record_rating(self, user_id, movie_id, rating, deadline):
        reply = await self.write(self.catalog.RecordRating, catalog_pb2.RecordRatingRequest(
            user_id=user_id, movie_id=movie_id, rating=rating), deadline, "catalog")
        return reply.rating

    async def upsert_movies(self, movies, deadline):
        reply = await self.write(self.catalog.UpsertMovies, catalog_pb2.UpsertMoviesRequest(
            movies=movies), deadline, "catalog")
        return list(reply.movies)

    async def upsert_user(self, request, deadline):
        return await self.write(self.catalog.UpsertUser, request, deadline, "catalog")

    async def delete_user(self, user_id, deadline):
        reply = await self.write(self.catalog.DeleteUser, catalog_pb2.DeleteUserRequest(
            user_id=user_id), deadline, "catalog")
        return reply.ratings_deleted

    async def embed_movies(self, movies, deadline):
        reply = await self.read(self.embedder.EmbedMovies, embedder_pb2.EmbedMoviesRequest(
            movies=movies), deadline, "embedder")
        return list(reply.embeddings)

    async def upsert_vectors(self, model, version, rows, deadline):
        # an upsert by id: repeating it changes nothing, so it is retried like a read
        await self.read(self.retriever.UpsertVectors, retriever_pb2.UpsertVectorsRequest(
            model=model, model_version=version, rows=rows), deadline, "retriever")

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.channels))


class ModelVersions:
    """The embedder's model versions, refreshed in the background (part of cache keys)."""

    def __init__(self, backends: Backends, interval: float) -> None:
        self.backends = backends
        self.interval = interval
        self.value = ""

    async def refresh(self) -> str:
        deadline = Deadline.start(None, 1.0)
        try:
            info = await self.backends.read(self.backends.embedder.GetModelInfo,
                                            embedder_pb2.GetModelInfoRequest(), deadline,
                                            "embedder")
            self.value = "|".join(sorted(f"{m.model}@{m.version}" for m in info.models))
        except Exception as exc:  # noqa: BLE001 - keep the last known versions
            log.warning("model versions unavailable: %s", type(exc).__name__)
        return self.value

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)
