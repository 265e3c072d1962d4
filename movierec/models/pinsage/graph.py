"""Training data for PinSage: id maps, movie features and the user-movie heterograph.

Items are indexed 0..N-1 in the order of the movies file, so every movie has a row
(movies without training edges included: they are "cold" and are embedded from their
features alone). The heterograph has node types ``user`` and ``movie`` and edge types
``watched`` (user -> movie) and ``watched-by`` (movie -> user), both carrying the
``rating`` and ``timestamp`` of the training interaction. Only training edges go in.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from movierec.compat.dgl import import_dgl
from movierec.data.movielens import MovieLens

YEAR_FIRST, YEAR_STEP, YEAR_BUCKETS = 1915, 5, 18
_TOKEN = re.compile(r"[a-z0-9]+")
MAX_TITLE_TOKENS = 8


@dataclass(frozen=True)
class ItemFeatures:
    """Per-movie input features, one row per item index."""

    genres: np.ndarray       # float32 (N, G) multi-hot
    year_bucket: np.ndarray  # int64 (N,), 0 = unknown year
    title_tokens: np.ndarray  # int64 (N, MAX_TITLE_TOKENS), 0 = padding
    has_edges: np.ndarray    # bool (N,), False for movies without training interactions

    @property
    def num_items(self) -> int:
        return len(self.year_bucket)


def tokenize(title: str) -> list[str]:
    return _TOKEN.findall(title.lower())


def title_vocabulary(titles: pd.Series, min_count: int = 2) -> dict[str, int]:
    """Tokens seen in at least ``min_count`` titles, numbered from 1 (0 is padding)."""
    counts = Counter(t for title in titles for t in set(tokenize(title)))
    kept = sorted(t for t, c in counts.items() if c >= min_count)
    return {t: i + 1 for i, t in enumerate(kept)}


def year_buckets(years: pd.Series) -> np.ndarray:
    """5-year buckets 1..YEAR_BUCKETS (clipped at both ends); 0 for a missing year."""
    values = years.to_numpy(dtype="float64", na_value=np.nan)
    bucket = np.clip((values - YEAR_FIRST) // YEAR_STEP, 0, YEAR_BUCKETS - 1) + 1
    return np.where(np.isnan(values), 0, bucket).astype(np.int64)


def item_features(movies: pd.DataFrame, genres: tuple[str, ...], vocab: dict[str, int],
                  trained_items: np.ndarray) -> ItemFeatures:
    """Build :class:`ItemFeatures`; ``trained_items`` are the indices with training edges."""
    genre_index = {g: i for i, g in enumerate(genres)}
    multi_hot = np.zeros((len(movies), len(genres)), dtype=np.float32)
    for row, names in enumerate(movies["genres"]):
        for name in names:
            if name in genre_index:
                multi_hot[row, genre_index[name]] = 1.0
    tokens = np.zeros((len(movies), MAX_TITLE_TOKENS), dtype=np.int64)
    for row, title in enumerate(movies["title"]):
        ids = [vocab[t] for t in tokenize(title) if t in vocab][:MAX_TITLE_TOKENS]
        tokens[row, :len(ids)] = ids
    has_edges = np.zeros(len(movies), dtype=bool)
    has_edges[trained_items] = True
    return ItemFeatures(multi_hot, year_buckets(movies["year"]), tokens, has_edges)


@dataclass(frozen=True)
class TrainingGraph:
    """Everything training needs that is derived from the data and the training split."""

    movie_ids: np.ndarray        # int64 (N,): item index -> movie id
    user_ids: np.ndarray         # int64 (U,): user index -> user id (users with training edges)
    features: ItemFeatures
    history: sparse.csr_matrix   # (U, N) float32, rating of each training interaction
    stamps: sparse.csr_matrix    # (U, N) int64, timestamp of the same interactions
    graph: object                # dgl heterograph (users, movies, both edge directions)
    genres: tuple[str, ...]
    vocab: dict[str, int]


def index_of(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` in ``sorted_ids``, -1 where absent."""
    if len(sorted_ids) == 0:
        return np.full(len(ids), -1)
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1)


def build_training_graph(data: MovieLens, train: pd.DataFrame) -> TrainingGraph:
    """Index ``data``'s movies, and build the graph and history matrix from ``train``."""
    movies = data.movies.sort_values("movie_id").reset_index(drop=True)
    movie_ids = movies["movie_id"].to_numpy(np.int64)
    user_ids = np.unique(train["user_id"].to_numpy(np.int64))
    items = index_of(movie_ids, train["movie_id"].to_numpy(np.int64))
    if (items < 0).any():
        raise ValueError("training interactions mention movies missing from the movies file")
    users = np.searchsorted(user_ids, train["user_id"].to_numpy(np.int64))
    ratings = train["rating"].to_numpy(np.float32)
    shape = (len(user_ids), len(movie_ids))
    history = sparse.csr_matrix((ratings, (users, items)), shape=shape)
    stamps = sparse.csr_matrix((train["timestamp"].to_numpy(np.int64), (users, items)), shape=shape)
    vocab = title_vocabulary(movies["title"])
    features = item_features(movies, data.genres, vocab, np.unique(items))
    graph = _heterograph(users, items, train, len(user_ids), len(movie_ids))
    return TrainingGraph(movie_ids, user_ids, features, history, stamps, graph, data.genres,
                         vocab)


def _heterograph(users: np.ndarray, items: np.ndarray, train: pd.DataFrame,
                 num_users: int, num_items: int):
    dgl = import_dgl()
    u, i = torch.from_numpy(users.astype(np.int64)), torch.from_numpy(items.astype(np.int64))
    graph = dgl.heterograph({("user", "watched", "movie"): (u, i),
                             ("movie", "watched-by", "user"): (i, u)},
                            num_nodes_dict={"user": num_users, "movie": num_items})
    rating = torch.from_numpy(train["rating"].to_numpy(np.int64).copy())
    stamp = torch.from_numpy(train["timestamp"].to_numpy(np.int64).copy())
    for etype in ("watched", "watched-by"):
        graph.edges[etype].data["rating"] = rating
        graph.edges[etype].data["timestamp"] = stamp
    return graph
