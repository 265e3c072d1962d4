"""An in-memory :class:`movierec.apps.gateway.backends.Downstream` for gateway tests."""

from __future__ import annotations

import asyncio

from movierec.apps.gateway.backends import Found, Hits
from movierec.apps.gateway.movies import MovieSnapshot
from movierec.apps.gateway.recommend import Recommender
from movierec.catalog.v1 import catalog_pb2
from movierec.common.v1 import common_pb2
from movierec.data.movielens import age_bucket
from movierec.embedder.v1 import embedder_pb2
from movierec.errors import NotFound

MOVIES = {i: common_pb2.Movie(movie_id=i, title=f"Movie {i}", year=1990) for i in range(1, 40)}
HISTORY = {7: [(3, 5), (4, 4), (5, 3)], 8: [], 9: []}
USERS = {7: catalog_pb2.User(user_id=7, gender="F", age=25, occupation=4),
         8: catalog_pb2.User(user_id=8, gender="M", age=35, occupation=12),
         9: catalog_pb2.User(user_id=9)}       # signed up, no profile, no ratings


def rated(pairs: list[tuple[int, int]]) -> common_pb2.RatedMovies:
    """(movie id, stars) pairs as a catalog history, older movies rated earlier."""
    return common_pb2.RatedMovies(movie_ids=[m for m, _ in pairs], ratings=[r for _, r in pairs],
                                  timestamps=[100 - m for m, _ in pairs])


class FakeDownstream:
    """The three services in memory: every movie scores 1/id; calls are recorded. A hit's
    reason is the smallest liked id below it (a stand-in for the co-liked table)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.version = 1

    async def embed_profile(self, profile, deadline):
        self.calls.append(("embed_profile", profile.user_id))
        return embedder_pb2.Embedding(model="fusion", model_version="f1", vector=[1.0],
                                      reading=common_pb2.Reading(vector=[2.0], offset=1.0,
                                                                 low=1.0, high=5.0))

    async def embed_liked(self, liked, deadline):
        self.calls.append(("embed_liked", tuple(liked.movie_ids)))
        return (embedder_pb2.Embedding(model="pinsage", model_version="p1", vector=[1.0]),
                [i for i in liked.movie_ids if i not in MOVIES])

    async def embed_history(self, history, deadline,
                            purpose=embedder_pb2.HISTORY_PURPOSE_TASTE):
        if purpose == embedder_pb2.HISTORY_PURPOSE_NEXT:
            self.calls.append(("embed_next", tuple(history.movie_ids)))
            return embedder_pb2.Embedding(model="sasrec", model_version="s1", vector=[1.0])
        self.calls.append(("embed_history", tuple(history.movie_ids)))
        return embedder_pb2.Embedding(model="pinsage", model_version="p1", vector=[1.0])

    async def user(self, user_id, limit, deadline):
        self.calls.append(("user", user_id))
        if user_id not in USERS:
            return None
        return USERS[user_id], rated(HISTORY[user_id])

    async def search(self, call, deadline):
        self.calls.append(("search", call.model, tuple(call.exclude)))
        excluded = set(call.exclude) | {call.like_movie_id}
        ids = [i for i in MOVIES if i not in excluded][:call.top_k]
        return Hits([Found(i, 1.0 / i, min((a for a in call.liked if a < i), default=0),
                           self._reading(call, i)) for i in ids], f"{call.model}-v")

    @staticmethod
    def _reading(call, movie_id: int) -> float | None:
        if call.reading is None:
            return None
        return min(call.reading.high, call.reading.offset + call.reading.vector[0] / movie_id)

    async def movies(self, movie_ids, deadline):
        self.calls.append(("movies", tuple(movie_ids)))
        return {i: MOVIES[i] for i in movie_ids if i in MOVIES}

    async def list_movies(self, after, limit, deadline):
        page = [MOVIES[i] for i in sorted(MOVIES) if i > after][:limit]
        return page, self.version

    async def catalog_version(self, deadline):
        return self.version

    async def popular(self, genres, limit, exclude, deadline):
        self.calls.append(("popular", tuple(exclude)))
        return [(MOVIES[i], 1000.0 - i) for i in MOVIES if i not in exclude][:limit]

    async def record_rating(self, user_id, movie_id, rating, deadline):
        self.calls.append(("record_rating", user_id, movie_id))
        return catalog_pb2.Rating(user_id=user_id, movie_id=movie_id, rating=rating)

    async def upsert_movies(self, movies, deadline):
        """Stored as given; an id-less movie gets an id above MOVIES (nothing is kept)."""
        self.calls.append(("upsert_movies", tuple(m.movie_id for m in movies)))
        fresh = iter(range(max(MOVIES) + 1, max(MOVIES) + 1 + len(movies)))
        return [common_pb2.Movie(movie_id=m.movie_id or next(fresh), title=m.title.strip(),
                                 year=m.year, genres=sorted(set(m.genres))) for m in movies]

    async def upsert_user(self, request, deadline):
        """A sign-up gets id 1000; a known id is updated, another one created."""
        self.calls.append(("upsert_user", request.user_id))
        user = catalog_pb2.User(user_id=request.user_id or 1000, age=age_bucket(request.age),
                                gender=request.gender, occupation=request.occupation)
        return catalog_pb2.UpsertUserResponse(user=user, created=user.user_id not in USERS)

    async def delete_user(self, user_id, deadline):
        """The number of ratings a known user had (USERS is left as it is)."""
        self.calls.append(("delete_user", user_id))
        if user_id not in USERS:
            raise NotFound(f"user {user_id} not found")
        return len(HISTORY[user_id])

    async def embed_movies(self, movies, deadline):
        """A content vector per model for movies the fake models do not know."""
        self.calls.append(("embed_movies", tuple(m.movie_id for m in movies)))
        return [embedder_pb2.MovieEmbedding(model=model, model_version=version,
                                            movie_id=m.movie_id, vector=[float(m.movie_id)])
                for m in movies if m.movie_id not in MOVIES
                for model, version in (("fusion", "f1"), ("pinsage", "p1"))]

    async def upsert_vectors(self, model, version, rows, deadline):
        self.calls.append(("upsert_vectors", model, version, tuple(r.movie_id for r in rows)))


def recommender(down: FakeDownstream, **kwargs) -> Recommender:
    """A pipeline over ``down`` with its movie snapshot loaded."""
    snapshot = MovieSnapshot(down)
    asyncio.run(snapshot.refresh())
    return Recommender(down, snapshot, **kwargs)
