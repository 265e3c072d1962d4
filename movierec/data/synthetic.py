"""A seedable synthetic MovieLens with learnable structure, in the project's schema.

Users and movies get latent factors; a user's gender, age bucket and occupation shift
their factors (so a profile alone predicts taste), a movie's genres and title words
follow its factors (so content features carry signal), popularity is long-tailed and
ratings are ``round(mean + biases + u.v + noise)`` clipped to 1-5. The same seed
always yields the same data. :func:`write_ml1m` writes it in ml-1m's file format.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.data.movielens import (
    AGE_BUCKETS,
    GENRES,
    NUM_OCCUPATIONS,
    MovieLens,
    genre_vocabulary,
)

_WORDS = ("night", "star", "love", "dead", "city", "war", "girl", "king", "dream", "river",
          "ghost", "money", "summer", "blood", "heart", "road", "shadow", "island", "secret",
          "fire", "storm", "family", "time", "dark", "last", "wild", "lost", "golden", "iron",
          "moon")
_NAME = re.compile(r"^synthetic(?:-(\d+)x(\d+)(?:x(\d+))?)?(?:-s(\d+))?$")


def generate(n_users: int = 300, n_movies: int = 400, ratings_per_user: int = 40,
             seed: int = 0, dim: int = 8) -> MovieLens:
    """Make a data set with ``n_users`` x ``ratings_per_user`` ratings (fewer for tiny catalogs)."""
    rng = np.random.default_rng(seed)
    users = _users(rng, n_users)
    user_f = _user_factors(rng, users, dim)
    movie_f = rng.normal(0, 0.6, (n_movies, dim))
    movies = _movies(rng, movie_f)
    ratings = _ratings(rng, user_f, movie_f, min(ratings_per_user, n_movies))
    digest = hashlib.sha256(f"synthetic:{n_users}:{n_movies}:{ratings_per_user}:{seed}".encode())
    return MovieLens(f"synthetic-{n_users}x{n_movies}x{ratings_per_user}-s{seed}", ratings,
                     movies, users, digest.hexdigest(), genre_vocabulary(movies))


def from_name(name: str) -> MovieLens:
    """Parse ``synthetic[-USERSxMOVIES[xPER_USER]][-sSEED]`` (e.g. ``synthetic-500x300-s1``)."""
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"bad synthetic data set name {name!r}")
    users, movies, per_user, seed = (int(g) if g else None for g in match.groups())
    return generate(users or 300, movies or 400, per_user or 40, seed or 0)


def _users(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": np.arange(1, n + 1, dtype=np.int32),
        "gender": rng.choice(["M", "F"], n, p=[0.7, 0.3]),
        "age": rng.choice(list(AGE_BUCKETS), n).astype(np.int16),
        "occupation": rng.integers(0, NUM_OCCUPATIONS, n).astype(np.int16),
        "zip": [f"{z:05d}" for z in rng.integers(0, 99999, n)],
    })


def _user_factors(rng: np.random.Generator, users: pd.DataFrame, dim: int) -> np.ndarray:
    by_gender = {g: rng.normal(0, 0.5, dim) for g in ("M", "F")}
    by_age = {a: rng.normal(0, 0.5, dim) for a in AGE_BUCKETS}
    by_job = rng.normal(0, 0.4, (NUM_OCCUPATIONS, dim))
    shared = np.stack([by_gender[g] + by_age[a] + by_job[o] for g, a, o in
                       zip(users["gender"], users["age"], users["occupation"], strict=True)])
    return shared + rng.normal(0, 0.3, (len(users), dim))


def _movies(rng: np.random.Generator, factors: np.ndarray) -> pd.DataFrame:
    n, dim = factors.shape
    genre_axes = rng.normal(0, 1, (len(GENRES), dim))
    affinity = factors @ genre_axes.T
    word_axes = rng.normal(0, 1, (len(_WORDS), dim))
    word_score = factors @ word_axes.T
    genres, titles = [], []
    for i in range(n):
        top = np.argsort(-affinity[i])[: rng.integers(1, 4)]
        genres.append(tuple(GENRES[j] for j in sorted(top)))
        words = np.argsort(-word_score[i])[: rng.integers(1, 4)]
        titles.append(" ".join(_WORDS[w].title() for w in words) + f" {i + 1}")
    return pd.DataFrame({
        "movie_id": np.arange(1, n + 1, dtype=np.int32),
        "title": titles,
        "year": pd.array(rng.integers(1930, 2001, n), dtype="Int64"),
        "genres": genres,
    })


def _ratings(rng: np.random.Generator, user_f: np.ndarray, movie_f: np.ndarray,
             per_user: int) -> pd.DataFrame:
    n_users, n_movies = len(user_f), len(movie_f)
    popularity = 1.0 / np.arange(1, n_movies + 1) ** 0.8
    popularity = rng.permutation(popularity / popularity.sum())
    movie_bias = rng.normal(0, 0.3, n_movies)
    rows = []
    for u in range(n_users):
        count = int(np.clip(rng.poisson(per_user), 5, n_movies))
        seen = rng.choice(n_movies, count, replace=False, p=popularity)
        raw = 3.6 + movie_bias[seen] + rng.normal(0, 0.2) + movie_f[seen] @ user_f[u]
        stars = np.clip(np.rint(raw + rng.normal(0, 0.35, count)), 1, 5)
        start = 956_700_000 + int(rng.integers(0, 30_000_000))
        times = start + np.sort(rng.integers(0, 5_000_000, count))
        rows.append(np.column_stack([np.full(count, u + 1), seen + 1, stars, times]))
    table = np.concatenate(rows).astype(np.int64)
    return pd.DataFrame({"user_id": table[:, 0].astype(np.int32),
                         "movie_id": table[:, 1].astype(np.int32),
                         "rating": table[:, 2].astype(np.int8), "timestamp": table[:, 3]})


def write_ml1m(data: MovieLens, directory: Path) -> Path:
    """Write ``data`` as ml-1m files (``::``-separated, latin-1) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    r = data.ratings
    lines = (r["user_id"].astype(str) + "::" + r["movie_id"].astype(str) + "::"
             + r["rating"].astype(str) + "::" + r["timestamp"].astype(str))
    (directory / "ratings.dat").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    movie_lines = [f"{m.movie_id}::{m.title}{'' if pd.isna(m.year) else f' ({m.year})'}::"
                   f"{'|'.join(m.genres)}" for m in data.movies.itertuples()]
    (directory / "movies.dat").write_bytes(("\n".join(movie_lines) + "\n").encode("latin-1"))
    user_lines = [f"{u.user_id}::{u.gender}::{u.age}::{u.occupation}::{u.zip}"
                  for u in data.users.itertuples()]
    (directory / "users.dat").write_bytes(("\n".join(user_lines) + "\n").encode("latin-1"))
    return directory
