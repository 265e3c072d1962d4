"""The recommendation pipeline behind ``Gateway.Recommend`` and ``SimilarMovies``.

embed (profile -> fusion; liked ids -> PinSage; a user -> their rated history, read
once from the catalog, -> PinSage, or their profile -> fusion when they rated nothing)
-> retriever search with exclusions (the request's, the liked ids and, for a known user
unless ``include_seen``, every movie they rated) and the genre filter pushed into Milvus
-> in one concurrent step: catalog metadata for the page and the anchors' vectors (both
kept in small in-process caches, see :mod:`movierec.apps.gateway.local`)
-> items with scores and a reason ("because you liked Heat (1995)": the liked movie
whose vector is closest to the recommended one).
Unknown users, users without history and empty embeddings fall back to popular movies,
and the reason says so. Paging takes consecutive slices of one ranking. The pipeline
talks to the services only through :class:`~movierec.apps.gateway.backends.Downstream`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from movierec import limits
from movierec.apps.gateway.backends import Deadline, Downstream
from movierec.apps.gateway.local import LocalCache
from movierec.apps.gateway.query import Query, describe_profile
from movierec.common.v1 import common_pb2
from movierec.data.movielens import age_bucket
from movierec.errors import NotFound
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.models.fusion.inference import predicted_stars
from movierec.models.user_input import catalog_profile

MAX_ANCHORS = 50


@dataclass
class Ranking:
    """Candidates of one query, best first, with what is needed to explain them."""

    model: str
    version: str
    hits: list[tuple[int, float]]
    anchors: list[int] = field(default_factory=list)
    star_scale: float = 1.0       # fusion: the model's map from cosine to stars
    star_offset: float = 0.0
    context: str = ""
    anchor_phrase: str = "because you liked"
    unknown: list[int] = field(default_factory=list)   # liked ids the model does not know
    query: list[float] | None = None   # the user vector searched with (fusion: for stars)


@dataclass
class Signal:
    """What a query turned into: a query vector (or None: no personal signal)."""

    embedding: object | None
    anchors: list[int] = field(default_factory=list)
    context: str = ""
    seen: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)


def title_of(movie: common_pb2.Movie) -> str:
    return f"{movie.title} ({movie.year})" if movie.year else movie.title


class Recommender:
    """Runs the pipeline against a :class:`Downstream`."""

    def __init__(self, downstream: Downstream, extra: int = 10, metadata_ttl: float = 60.0,
                 versions: Callable[[], str] = lambda: "") -> None:
        self.down = downstream
        self.extra = extra
        self.versions = versions
        self.movie_cache = LocalCache("movies", 50_000, metadata_ttl)
        self.vector_cache = LocalCache("vectors", 100_000, 3600.0)
        self.profile_cache = LocalCache("profiles", 20_000, 600.0)

    async def _embed_profile(self, profile: common_pb2.Profile, deadline: Deadline):
        """The fusion vector of a profile. It depends only on the age bucket, gender,
        occupation and user id, so it is kept per model version and profile cell."""
        cell = (self.versions(), age_bucket(profile.age), profile.gender, profile.occupation,
                profile.user_id if profile.HasField("user_id") else 0)

        async def fetch(missing: list) -> dict:
            return {missing[0]: await self.down.embed_profile(profile, deadline)}
        return (await self.profile_cache.get_many([cell], fetch))[cell]

    async def _seen(self, q: Query, deadline: Deadline) -> list[int]:
        if not q.hides_seen:
            return []
        history = await self.down.user_history(q.user_id, limits.MAX_HISTORY, deadline)
        return list(history.movie_ids) if history is not None else []

    async def _user(self, q: Query, deadline: Deadline) -> Signal:
        history = await self.down.user_history(q.user_id, limits.MAX_HISTORY, deadline)
        if history is None:
            raise NotFound(f"user {q.user_id} does not exist; ask with a profile or liked "
                           f"movies instead")
        rated = list(history.movie_ids)
        seen = [] if q.include_seen else rated
        embedded = await self.down.embed_history(history, deadline) if rated else None
        if embedded is not None:
            return Signal(embedded[0], embedded[1][:MAX_ANCHORS], seen=seen)
        if rated:
            return Signal(None, context=f"user {q.user_id} rated no movie the model knows",
                          seen=seen)
        user = await self.down.user(q.user_id, deadline)
        if user is None or not user.gender or not user.age:
            return Signal(None, context=f"user {q.user_id} has no ratings yet")
        p = catalog_profile(user.age, user.gender, user.occupation, q.user_id)
        profile = common_pb2.Profile(age=p.age, gender=p.gender, occupation=p.occupation,
                                     user_id=q.user_id)
        embedding = await self._embed_profile(profile, deadline)
        return Signal(embedding, context=f"user {q.user_id}'s profile (no ratings yet)")

    async def _signal(self, q: Query, deadline: Deadline) -> Signal:
        if q.kind == "user":
            return await self._user(q, deadline)
        if q.kind == "profile":
            embedding, seen = await asyncio.gather(
                self._embed_profile(q.profile, deadline), self._seen(q, deadline))
            return Signal(embedding, context=describe_profile(q.profile), seen=seen)
        liked = common_pb2.LikedMovies(movie_ids=q.liked, weights=q.weights)
        embedding, unknown = await self.down.embed_liked(liked, deadline)
        known = [i for i in q.liked if i not in set(unknown)]
        return Signal(embedding, known[:MAX_ANCHORS], unknown=unknown)

    async def rank(self, q: Query, deadline: Deadline) -> Ranking:
        signal = await self._signal(q, deadline)
        exclude = list(dict.fromkeys([*q.exclude, *signal.seen, *q.liked]))
        want = min(limits.MAX_RANK, q.page_start + q.top_k + self.extra)
        if signal.embedding is None:
            popular = await self.down.popular(q.genres, want, exclude, deadline)
            return Ranking("popular", "", [(m.movie_id, s) for m, s in popular],
                           context=signal.context or "no personal signal")
        e = signal.embedding
        hits = await self.down.search(e.model, e.vector, want, exclude, q.genres, deadline)
        return Ranking(e.model, hits.version or e.model_version, hits.items, signal.anchors,
                       e.score_scale or 1.0, e.score_offset, signal.context,
                       unknown=signal.unknown, query=list(e.vector))

    async def _movies(self, ids: list[int], deadline: Deadline) -> dict:
        async def fetch(missing: list[int]) -> dict:
            return await self.down.movies(missing, deadline)
        return await self.movie_cache.get_many(ids, fetch)

    async def _vectors(self, model: str, version: str, ids: list[int],
                       deadline: Deadline) -> dict[int, np.ndarray]:
        async def fetch(missing: list[tuple]) -> dict:
            found, found_version = await self.down.vectors(model, [k[2] for k in missing],
                                                           deadline)
            return {(model, found_version, i): np.asarray(v, np.float32)
                    for i, v in found.items()}
        found = await self.vector_cache.get_many([(model, version, i) for i in ids], fetch)
        return {key[2]: vector for key, vector in found.items()}

    async def explain(self, ranking: Ranking, page_start: int, top_k: int,
                      deadline: Deadline) -> tuple[list[pb.RecommendedMovie], bool]:
        """Items of the page [page_start, page_start + top_k) with metadata and reasons."""
        page = ranking.hits[page_start:page_start + top_k + self.extra]
        wanted = list(dict.fromkeys([i for i, _ in page] + ranking.anchors))
        stars = ranking.model == "fusion" and ranking.query is not None
        if (ranking.anchors or stars) and ranking.model != "popular":
            meta, vectors = await asyncio.gather(
                self._movies(wanted, deadline),
                self._vectors(ranking.model, ranking.version, wanted, deadline))
        else:
            meta, vectors = await self._movies(wanted, deadline), {}
        closest = _closest_anchor(vectors, ranking.anchors)
        predicted = _page_stars(ranking, page, vectors) if stars else {}
        items = []
        for movie_id, score in page:
            if movie_id not in meta or len(items) == top_k:
                continue
            score = predicted.get(movie_id, score)
            items.append(_item(meta[movie_id], score, ranking,
                               meta.get(closest.get(movie_id, -1))))
        end = page_start + top_k
        more = len(ranking.hits) > end and end < limits.MAX_RANK
        return items, more


def _page_stars(ranking: Ranking, page: list[tuple[int, float]],
                vectors: dict[int, np.ndarray]) -> dict[int, float]:
    """The stars fusion predicts for the page's movies, in one vectorised call."""
    ids = [movie_id for movie_id, _ in page if movie_id in vectors]
    if not ids:
        return {}
    stars = predicted_stars(np.asarray(ranking.query, np.float32),
                            np.stack([vectors[i] for i in ids]),
                            ranking.star_scale, ranking.star_offset)
    return {movie_id: float(star) for movie_id, star in zip(ids, stars, strict=True)}


def _closest_anchor(table: dict[int, np.ndarray], anchors: list[int]) -> dict[int, int]:
    """For each movie of ``table``, the anchor (liked movie) most like it: the largest
    cosine after centring every vector on their mean, so that a component shared by all
    movies (PinSage's folded bias column, nearly constant) does not make the most popular
    anchor everyone's reason."""
    known = [a for a in anchors if a in table]
    if not known:
        return {}
    ids = list(table)
    matrix = np.stack([table[i] for i in ids]).astype(np.float32)
    matrix -= matrix.mean(axis=0)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    rows = {movie_id: row for row, movie_id in enumerate(ids)}
    similarity = matrix @ matrix[[rows[a] for a in known]].T
    return {movie_id: known[int(np.argmax(similarity[rows[movie_id]]))] for movie_id in ids}


def _item(movie: common_pb2.Movie, score: float, ranking: Ranking,
          anchor: common_pb2.Movie | None) -> pb.RecommendedMovie:
    """A page item; ``score`` is predicted stars for fusion recommendations, the
    retrieval score otherwise (a rating count for popular movies)."""
    if ranking.model == "popular":
        reason = f"popular: rated by {int(score):,} people ({ranking.context})"
    elif anchor is not None:
        reason = f"{ranking.anchor_phrase} {title_of(anchor)}"
    elif ranking.model == "fusion" and ranking.query is not None:
        reason = f"predicted {score:.1f} stars for {ranking.context or 'people like you'}"
    else:
        reason = "close to your taste"
    return pb.RecommendedMovie(movie_id=movie.movie_id, title=movie.title, year=movie.year,
                               genres=list(movie.genres), score=score, reason=reason)


async def similar(downstream: Downstream, model: str, movie_id: int, top_k: int,
                  genres: tuple[str, ...], deadline: Deadline) -> Ranking:
    """Movies closest to ``movie_id`` in ``model``'s space."""
    vectors, _ = await downstream.vectors(model, [movie_id], deadline)
    if movie_id not in vectors:
        raise NotFound(f"movie {movie_id} has no {model} vector")
    hits = await downstream.search(model, vectors[movie_id], top_k + 10, [movie_id], genres,
                                   deadline)
    return Ranking(model, hits.version, hits.items, [movie_id], anchor_phrase="similar to")
