"""Training batches: rating rows joined to the per-user and per-movie feature tables."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from movierec.compat.paddle import paddle
from movierec.data.movielens import MovieLens
from movierec.models.fusion.features import (
    UNKNOWN,
    MovieFeatures,
    UserFeatures,
    Vocab,
    movie_features,
    user_features,
)


@dataclass
class Tables:
    """Feature rows for every user and movie of a data set, and raw id -> row maps."""

    users: UserFeatures
    movies: MovieFeatures
    user_ids: np.ndarray
    movie_ids: np.ndarray
    windows: np.ndarray

    def user_rows(self, ids: np.ndarray) -> np.ndarray:
        return _rows(self.user_ids, ids, "user")

    def movie_rows(self, ids: np.ndarray) -> np.ndarray:
        return _rows(self.movie_ids, ids, "movie")


def _rows(sorted_ids: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
    pos = np.searchsorted(sorted_ids, ids)
    if len(ids) and (pos.max() >= len(sorted_ids) or (sorted_ids[pos] != ids).any()):
        raise ValueError(f"rating refers to a {what} id missing from the {what}s file")
    return pos


def build_tables(vocab: Vocab, data: MovieLens, window: int) -> Tables:
    """Feature tables of every user and movie, with the title word windows precomputed."""
    users = data.users.sort_values("user_id")
    movies = data.movies.sort_values("movie_id")
    movie_table = movie_features(vocab, movies)
    return Tables(user_features(vocab, users), movie_table,
                  users["user_id"].to_numpy().astype(np.int64),
                  movies["movie_id"].to_numpy().astype(np.int64), movie_table.windows(window))


@dataclass
class Batch:
    """One mini-batch: features of its distinct users and movies, and per-rating indices.

    Each tower runs once per distinct (user, id dropped) or (movie, id dropped) of the
    batch; ``user_index``/``movie_index`` map every rating to its tower output.
    """

    users: UserFeatures
    movies: MovieFeatures
    windows: np.ndarray
    user_index: np.ndarray
    movie_index: np.ndarray
    rating: np.ndarray

    def inputs(self) -> list[paddle.Tensor]:
        u, m = self.users, self.movies
        return [paddle.to_tensor(a) for a in (u.uid, u.gender, u.age, u.occupation,
                                               m.mid, m.genres, self.windows,
                                               self.user_index, self.movie_index)]


def _distinct(rows: np.ndarray, dropped: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct rows, whether their id is dropped, inverse index) of (row, dropped) pairs."""
    keys, inverse = np.unique(rows * 2 + dropped, return_inverse=True)
    return keys // 2, keys % 2 == 1, inverse.astype(np.int64)


class Batcher:
    """Shuffled mini-batches of (user row, movie row, rating) with id dropout."""

    def __init__(self, tables: Tables, user_rows: np.ndarray, movie_rows: np.ndarray,
                 ratings: np.ndarray) -> None:
        self.tables = tables
        self.user_rows = user_rows
        self.movie_rows = movie_rows
        self.ratings = ratings.astype(np.float32)

    def __len__(self) -> int:
        return len(self.ratings)

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None = None,
              user_drop: float = 0.0, movie_drop: float = 0.0) -> Batch:
        user_dropped = _dropped(rng, user_drop, len(rows))
        return self._batch(rows, user_dropped, _dropped(rng, movie_drop, len(rows)))

    def _batch(self, rows: np.ndarray, user_dropped: np.ndarray,
               movie_dropped: np.ndarray) -> Batch:
        user_rows, user_dropped, user_index = _distinct(self.user_rows[rows], user_dropped)
        movie_rows, movie_dropped, movie_index = _distinct(self.movie_rows[rows], movie_dropped)
        users = self.tables.users.take(user_rows)
        users.uid = np.where(user_dropped, UNKNOWN, users.uid)
        movies = self.tables.movies.take(movie_rows)
        movies.mid = np.where(movie_dropped, UNKNOWN, movies.mid)
        return Batch(users, movies, self.tables.windows[movie_rows], user_index, movie_index,
                     self.ratings[rows])

    def steps(self, batch_size: int, world: int = 1) -> int:
        """Batches per :meth:`epoch`: a last batch too small to give each of ``world``
        ranks a row is dropped."""
        full, last = divmod(len(self), batch_size)
        return full + (last >= world)

    def epoch(self, batch_size: int, rng: np.random.Generator, user_drop: float,
              movie_drop: float, shard: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
        """Shuffled batches of ``batch_size`` rows with id dropout; ``shard = (rank,
        world)``: only rank's part of each batch (``world`` near-equal parts). Every rank
        draws the same numbers from ``rng`` (the whole batch's dropout), so ranks seeded
        alike cut the same batches and stay in step."""
        rank, world = shard
        order = rng.permutation(len(self))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            user_dropped = _dropped(rng, user_drop, len(rows))
            movie_dropped = _dropped(rng, movie_drop, len(rows))
            if len(rows) < world:
                continue
            part = np.array_split(np.arange(len(rows)), world)[rank]
            yield self._batch(rows[part], user_dropped[part], movie_dropped[part])

    def ordered(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self), batch_size):
            yield self.batch(np.arange(start, min(start + batch_size, len(self))))


def _dropped(rng: np.random.Generator | None, rate: float, size: int) -> np.ndarray:
    if rng is None or rate <= 0:
        return np.zeros(size, dtype=np.int64)
    return (rng.random(size) < rate).astype(np.int64)


def batcher_for(tables: Tables, frame) -> Batcher:
    """A batcher over the rows of a ratings frame."""
    return Batcher(tables, tables.user_rows(frame["user_id"].to_numpy().astype(np.int64)),
                   tables.movie_rows(frame["movie_id"].to_numpy().astype(np.int64)),
                   frame["rating"].to_numpy())
