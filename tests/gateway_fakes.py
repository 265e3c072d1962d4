"""An in-memory :class:`movierec.apps.gateway.backends.Downstream` for gateway tests."""

from __future__ import annotations

from movierec.apps.gateway.backends import Hits
from movierec.catalog.v1 import catalog_pb2
from movierec.common.v1 import common_pb2
from movierec.embedder.v1 import embedder_pb2

MOVIES = {i: common_pb2.Movie(movie_id=i, title=f"Movie {i}", year=1990) for i in range(1, 40)}
HISTORY = {7: [(3, 5), (4, 4), (5, 3)], 8: []}
USERS = {7: catalog_pb2.User(user_id=7, gender="F", age=25, occupation=4),
         8: catalog_pb2.User(user_id=8, gender="M", age=35, occupation=12)}


def rated(pairs: list[tuple[int, int]]) -> common_pb2.RatedMovies:
    """(movie id, stars) pairs as a catalog history, older movies rated earlier."""
    return common_pb2.RatedMovies(movie_ids=[m for m, _ in pairs], ratings=[r for _, r in pairs],
                                  timestamps=[100 - m for m, _ in pairs])


class FakeDownstream:
    """The three services in memory: every movie scores 1/id; calls are recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def embed_profile(self, profile, deadline):
        self.calls.append(("embed_profile", profile.user_id))
        return embedder_pb2.Embedding(model="fusion", model_version="f1", vector=[1.0],
                                      score_scale=2.0, score_offset=1.0)

    async def embed_liked(self, liked, deadline):
        self.calls.append(("embed_liked", tuple(liked.movie_ids)))
        return (embedder_pb2.Embedding(model="pinsage", model_version="p1", vector=[1.0]),
                [i for i in liked.movie_ids if i not in MOVIES])

    async def embed_history(self, history, deadline):
        self.calls.append(("embed_history", tuple(history.movie_ids)))
        return (embedder_pb2.Embedding(model="pinsage", model_version="p1", vector=[1.0]),
                list(history.movie_ids))

    async def user_history(self, user_id, limit, deadline):
        self.calls.append(("user_history", user_id))
        if user_id not in HISTORY:
            return None
        return rated(HISTORY[user_id])

    async def user(self, user_id, deadline):
        self.calls.append(("user", user_id))
        return USERS.get(user_id)

    async def search(self, model, vector, top_k, exclude, genres, deadline):
        self.calls.append(("search", model, tuple(exclude)))
        ids = [i for i in MOVIES if i not in set(exclude)][:top_k]
        return Hits([(i, 1.0 / i) for i in ids], f"{model}-v")

    async def vectors(self, model, movie_ids, deadline):
        return {i: [1.0, float(i)] for i in movie_ids if i in MOVIES}, f"{model}-v"

    async def movies(self, movie_ids, deadline):
        return {i: MOVIES[i] for i in movie_ids if i in MOVIES}

    async def popular(self, genres, limit, exclude, deadline):
        self.calls.append(("popular", tuple(exclude)))
        return [(MOVIES[i], 1000.0 - i) for i in MOVIES if i not in exclude][:limit]

    async def record_rating(self, user_id, movie_id, rating, deadline):
        self.calls.append(("record_rating", user_id, movie_id))
        return catalog_pb2.Rating(user_id=user_id, movie_id=movie_id, rating=rating)
