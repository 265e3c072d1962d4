"""The recommendation pipeline behind ``Gateway.Recommend`` and ``SimilarMovies``.

embed (profile -> fusion, liked ids -> PinSage, user -> history or profile)
-> retriever search with exclusions and genre filter pushed into Milvus
-> in one concurrent step: catalog metadata for the page and the anchors' vectors
   (both kept in small in-process caches, see :mod:`gateway.local`)
-> items with scores and a reason ("because you liked Heat (1995)": the liked movie
   whose vector is closest to the recommended one).
Unknown users, users without history and empty embeddings fall back to popular
movies, and the reason says so. Paging takes consecutive slices of one ranking.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
import numpy as np

from gateway.backends import Backends, Deadline
from gateway.local import LocalCache
from movierec.catalog.v1 import catalog_pb2
from movierec.common.v1 import common_pb2
from movierec.data.movielens import AGE_BUCKETS, OCCUPATIONS, age_bucket
from movierec.embedder.v1 import embedder_pb2
from movierec.errors import NotFound
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.retriever.v1 import retriever_pb2

MAX_RANK = 1000
MAX_ANCHORS = 50


@dataclass(frozen=True)
class Query:
    """A validated, normalized Recommend request."""

    kind: str
    top_k: int
    offset: int
    profile: common_pb2.Profile | None = None
    liked: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    user_id: int | None = None
    genres: tuple[str, ...] = ()
    exclude: tuple[int, ...] = ()
    exclude_seen: bool = False


@dataclass
class Ranking:
    """Candidates of one query, best first, with what is needed to explain them."""

    model: str
    version: str
    hits: list[tuple[int, float]]
    anchors: list[int] = field(default_factory=list)
    scale: float = 1.0
    offset: float = 0.0
    context: str = ""
    anchor_phrase: str = "because you liked"


def describe_profile(profile: common_pb2.Profile) -> str:
    low, high = AGE_BUCKETS[age_bucket(profile.age)]
    ages = f"{low}-{high}" if high < 200 else f"{low}+"
    job = OCCUPATIONS[profile.occupation] if 0 <= profile.occupation < 21 else "other"
    return f"{'women' if profile.gender == 'F' else 'men'} aged {ages}, {job}"


def title_of(movie: common_pb2.Movie) -> str:
    return f"{movie.title} ({movie.year})" if movie.year else movie.title


class Recommender:
    """Runs the pipeline against the three backends."""

    def __init__(self, backends: Backends, extra: int = 10, metadata_ttl: float = 60.0) -> None:
        self.b = backends
        self.extra = extra
        self.movie_cache = LocalCache("movies", 50_000, metadata_ttl)
        self.vector_cache = LocalCache("vectors", 100_000, 3600.0)

    async def _seen(self, user_id: int | None, deadline: Deadline) -> list[int]:
        if user_id is None:
            return []
        try:
            reply = await self.b.read(self.b.catalog.GetUserHistory,
                                      catalog_pb2.GetUserHistoryRequest(user_id=user_id,
                                                                        limit=5000),
                                      deadline, "catalog")
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return []
            raise
        return [r.movie_id for r in reply.ratings]

    async def _embed(self, q: Query, deadline: Deadline):
        """(embedding or None, anchor ids, context) for the query kind."""
        e = self.b.embedder
        if q.kind == "profile":
            reply = await self.b.read(e.EmbedProfile, embedder_pb2.EmbedProfileRequest(
                profile=q.profile), deadline, "embedder")
            return reply.embedding, [], describe_profile(q.profile)
        if q.kind == "liked":
            liked = common_pb2.LikedMovies(movie_ids=q.liked, weights=q.weights)
            reply = await self.b.read(e.EmbedLikedMovies, embedder_pb2.EmbedLikedMoviesRequest(
                liked=liked), deadline, "embedder")
            return reply.embedding, list(q.liked[:MAX_ANCHORS]), ""
        try:
            reply = await self.b.read(e.EmbedUser, embedder_pb2.EmbedUserRequest(
                user_id=q.user_id), deadline, "embedder")
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None, [], f"user {q.user_id} is new here"
        if reply.source == "none":
            return None, [], f"user {q.user_id} has no ratings yet"
        if reply.source == "profile":
            return reply.embedding, [], f"user {q.user_id}'s profile (no ratings yet)"
        return reply.embedding, list(reply.history_movie_ids[:MAX_ANCHORS]), ""

    async def rank(self, q: Query, deadline: Deadline) -> Ranking:
        seen_task = asyncio.ensure_future(self._seen(q.user_id if q.exclude_seen else None,
                                                     deadline))
        try:
            embedding, anchors, context = await self._embed(q, deadline)
        finally:
            seen = await seen_task
        exclude = list(dict.fromkeys([*q.exclude, *seen, *q.liked]))
        want = min(MAX_RANK, q.offset + q.top_k + self.extra)
        if embedding is None:
            return await self._popular(q, exclude, want, deadline, context)
        reply = await self.b.read(self.b.retriever.Search, retriever_pb2.SearchRequest(
            model=embedding.model, vector=embedding.vector, top_k=want,
            exclude_ids=exclude[:10_000], genres=q.genres), deadline, "retriever")
        return Ranking(embedding.model, reply.model_version or embedding.model_version,
                       [(h.movie_id, h.score) for h in reply.hits], anchors,
                       embedding.score_scale or 1.0, embedding.score_offset, context)

    async def _popular(self, q: Query, exclude: list[int], want: int, deadline: Deadline,
                       context: str) -> Ranking:
        reply = await self.b.read(self.b.catalog.ListPopular, catalog_pb2.ListPopularRequest(
            genres=q.genres, limit=want, exclude_movie_ids=exclude[:1000]), deadline, "catalog")
        return Ranking("popular", "", [(m.movie.movie_id, m.score) for m in reply.movies],
                       context=context or "no personal signal")

    async def _movies(self, ids: list[int], deadline: Deadline) -> dict:
        async def fetch(missing: list[int]) -> dict:
            reply = await self.b.read(self.b.catalog.GetMovies, catalog_pb2.GetMoviesRequest(
                movie_ids=missing), deadline, "catalog")
            return {m.movie_id: m for m in reply.movies}
        return await self.movie_cache.get_many(ids, fetch)

    async def _vectors(self, model: str, version: str, ids: list[int],
                       deadline: Deadline) -> dict[int, np.ndarray]:
        async def fetch(missing: list[tuple]) -> dict:
            reply = await self.b.read(self.b.retriever.GetVectors, retriever_pb2.GetVectorsRequest(
                model=model, movie_ids=[k[2] for k in missing]), deadline, "retriever")
            return {(model, reply.model_version, v.movie_id): np.asarray(v.vector, np.float32)
                    for v in reply.vectors}
        found = await self.vector_cache.get_many([(model, version, i) for i in ids], fetch)
        return {key[2]: vector for key, vector in found.items()}

    async def explain(self, ranking: Ranking, offset: int, top_k: int,
                      deadline: Deadline) -> tuple[list[pb.RecommendedMovie], bool]:
        """Items of the page [offset, offset + top_k) with metadata and reasons."""
        page = ranking.hits[offset:offset + top_k + self.extra]
        wanted = list(dict.fromkeys([i for i, _ in page] + ranking.anchors))
        if ranking.anchors and ranking.model != "popular":
            meta, vectors = await asyncio.gather(
                self._movies(wanted, deadline),
                self._vectors(ranking.model, ranking.version, wanted, deadline))
        else:
            meta, vectors = await self._movies(wanted, deadline), {}
        closest = _closest_anchor(vectors, ranking.anchors)
        items = []
        for movie_id, score in page:
            if movie_id not in meta or len(items) == top_k:
                continue
            items.append(_item(meta[movie_id], score, ranking,
                               meta.get(closest.get(movie_id, -1))))
        more = len(ranking.hits) > offset + top_k and offset + top_k < MAX_RANK
        return items, more


def _closest_anchor(table: dict[int, np.ndarray], anchors: list[int]) -> dict[int, int]:
    known = [a for a in anchors if a in table]
    if not known:
        return {}
    matrix = np.stack([table[a] for a in known])
    return {movie_id: known[int(np.argmax(matrix @ vec))] for movie_id, vec in table.items()}


def _item(movie: common_pb2.Movie, score: float, ranking: Ranking,
          anchor: common_pb2.Movie | None) -> pb.RecommendedMovie:
    if ranking.model == "fusion":
        score = float(np.clip(ranking.offset + ranking.scale * score, 1.0, 5.0))
    if ranking.model == "popular":
        reason = f"popular: rated by {int(score):,} people ({ranking.context})"
    elif anchor is not None:
        reason = f"{ranking.anchor_phrase} {title_of(anchor)}"
    elif ranking.model == "fusion":
        reason = f"predicted {score:.1f} stars for {ranking.context or 'people like you'}"
    else:
        reason = "close to your taste"
    return pb.RecommendedMovie(movie_id=movie.movie_id, title=movie.title, year=movie.year,
                               genres=list(movie.genres), score=score, reason=reason)


async def similar(backends: Backends, model: str, movie_id: int, top_k: int,
                  genres: tuple[str, ...], deadline: Deadline) -> Ranking:
    """Movies closest to ``movie_id`` in ``model``'s space."""
    vectors = await backends.read(backends.retriever.GetVectors, retriever_pb2.GetVectorsRequest(
        model=model, movie_ids=[movie_id]), deadline, "retriever")
    if not vectors.vectors:
        raise NotFound(f"movie {movie_id} has no {model} vector")
    reply = await backends.read(backends.retriever.Search, retriever_pb2.SearchRequest(
        model=model, vector=vectors.vectors[0].vector, top_k=top_k + 10,
        exclude_ids=[movie_id], genres=genres), deadline, "retriever")
    return Ranking(model, reply.model_version, [(h.movie_id, h.score) for h in reply.hits],
                   [movie_id], anchor_phrase="similar to")
