"""The gateway's downstream services behind one small interface, each call with a deadline.

:class:`Downstream` is what the recommendation pipeline needs, in the pipeline's own
terms (a user's ratings, a query vector, hits, movies); :class:`Backends` implements
it over gRPC with one channel per service, and tests pass a fake. Reads are idempotent
and retried on UNAVAILABLE within the deadline; writes are never retried. Every call's
deadline is the smaller of the configured per-call timeout and what is left of the
incoming request's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import grpc

from movierec.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from movierec.common.v1 import common_pb2
from movierec.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from movierec.retriever.v1 import retriever_pb2, retriever_pb2_grpc
from movierec.server import client

log = logging.getLogger(__name__)


@dataclass
class Deadline:
    """What is left of one request's time budget."""

    end: float
    per_call: float

    @classmethod
    def start(cls, remaining: float | None, per_call: float) -> Deadline:
        budget = per_call * 4 if remaining is None else remaining
        return cls(time.monotonic() + budget, per_call)

    def timeout(self) -> float:
        return max(0.001, min(self.per_call, self.end - time.monotonic()))

    def left(self) -> float:
        return self.end - time.monotonic()


@dataclass(frozen=True)
class Hits:
    """A search's answer: (movie id, score) best first, and the version searched."""

    items: list[tuple[int, float]]
    version: str


class Downstream(Protocol):
    """Everything the pipeline asks of the embedder, retriever and catalog."""

    async def embed_profile(self, profile: common_pb2.Profile,
                            deadline: Deadline) -> embedder_pb2.Embedding: ...

    async def embed_liked(self, liked: common_pb2.LikedMovies, deadline: Deadline
                          ) -> tuple[embedder_pb2.Embedding, list[int]]: ...

    async def embed_history(self, history: common_pb2.RatedMovies, deadline: Deadline
                            ) -> tuple[embedder_pb2.Embedding, list[int]] | None: ...

    async def user_history(self, user_id: int, limit: int,
                           deadline: Deadline) -> common_pb2.RatedMovies | None: ...

    async def user(self, user_id: int, deadline: Deadline) -> catalog_pb2.User | None: ...

    async def search(self, model: str, vector, top_k: int, exclude: list[int],
                     genres: tuple[str, ...], deadline: Deadline) -> Hits: ...

    async def vectors(self, model: str, movie_ids: list[int],
                      deadline: Deadline) -> tuple[dict[int, list[float]], str]: ...

    async def movies(self, movie_ids: list[int],
                     deadline: Deadline) -> dict[int, common_pb2.Movie]: ...

    async def popular(self, genres: tuple[str, ...], limit: int, exclude: list[int],
                      deadline: Deadline) -> list[tuple[common_pb2.Movie, float]]: ...

    async def search_movies(self, request: catalog_pb2.SearchMoviesRequest,
                            deadline: Deadline) -> catalog_pb2.SearchMoviesResponse: ...

    async def genres(self, deadline: Deadline) -> list[str]: ...

    async def record_rating(self, user_id: int, movie_id: int, rating: int,
                            deadline: Deadline) -> catalog_pb2.Rating: ...


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

    async def embed_history(self, history, deadline):
        try:
            reply = await self.read(self.embedder.EmbedHistory,
                                    embedder_pb2.EmbedHistoryRequest(history=history), deadline,
                                    "embedder")
        except grpc.aio.AioRpcError as exc:
            if _missing(exc):  # none of the rated movies is known to the model
                return None
            raise
        return reply.embedding, list(reply.used_movie_ids)

    async def user_history(self, user_id, limit, deadline):
        try:
            reply = await self.read(self.catalog.GetUserHistory,
                                    catalog_pb2.GetUserHistoryRequest(user_id=user_id,
                                                                      limit=limit),
                                    deadline, "catalog")
        except grpc.aio.AioRpcError as exc:
            if _missing(exc):
                return None
            raise
        return reply.history

    async def user(self, user_id, deadline):
        try:
            reply = await self.read(self.catalog.GetUser, catalog_pb2.GetUserRequest(
                user_id=user_id), deadline, "catalog")
        except grpc.aio.AioRpcError as exc:
            if _missing(exc):
                return None
            raise
        return reply.user

    async def search(self, model, vector, top_k, exclude, genres, deadline, version=""):
        # version: the embedder's Embedding.model_version; the retriever answers
        # FAILED_PRECONDITION when its live collection holds another version
        reply = await self.read(self.retriever.Search, retriever_pb2.SearchRequest(
            model=model, vector=vector, top_k=top_k, exclude_ids=exclude, genres=genres,
            model_version=version), deadline, "retriever")
        return Hits([(h.movie_id, h.score) for h in reply.hits], reply.model_version)

    async def vectors(self, model, movie_ids, deadline):
        reply = await self.read(self.retriever.GetVectors, retriever_pb2.GetVectorsRequest(
            model=model, movie_ids=movie_ids), deadline, "retriever")
        return {v.movie_id: list(v.vector) for v in reply.vectors}, reply.model_version

    async def movies(self, movie_ids, deadline):
        reply = await self.read(self.catalog.GetMovies, catalog_pb2.GetMoviesRequest(
            movie_ids=movie_ids), deadline, "catalog")
        return {m.movie_id: m for m in reply.movies}

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
