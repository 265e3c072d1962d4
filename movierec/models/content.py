"""How a movie no model trained on gets a vector: a map from its own features.

A movie added to the catalog after training has no learned vector. Each model version
therefore carries a *content map*, fitted at export: a ridge regression from a movie's
own features to the model's exported item vector, on the movies the model trained on.
The embedder applies it (numpy only) to a new movie's title, year and genres, and the
retriever inserts the result into the live collection, so the movie can be found and
recommended at once, until the next training learns it from its ratings.

Features (:meth:`ContentMap.features`): the genres (multi-hot over the data set's
genres), the title's words that occur in at least two training titles (1 / sqrt(words)
each) and the year (one-hot 5-year buckets from 1915, an "unknown" bucket). The ridge
penalty is chosen on a seeded tenth of the trained movies (cosine of predicted and
learned vectors), then the map is refitted on all of them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

FILE = "content_map.npz"
_WORD = re.compile(r"[a-z0-9']+")
YEAR_FIRST, YEAR_STEP, YEAR_BUCKETS = 1915, 5, 18
ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def words(title: str) -> list[str]:
    return _WORD.findall(title.lower())


@dataclass(frozen=True)
class ContentMap:
    """Movie features -> one model version's item vector space."""

    genres: tuple[str, ...]
    vocabulary: tuple[str, ...]
    weights: np.ndarray          # (features, dim)
    bias: np.ndarray             # (dim,)
    alpha: float = 1.0

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])

    def features(self, title: str, year: int | None, genres: Sequence[str]) -> np.ndarray:
        """One movie's feature row."""
        row = np.zeros(self.weights.shape[0], dtype=np.float32)
        genre_at = {g: i for i, g in enumerate(self.genres)}
        for genre in genres:
            if genre in genre_at:
                row[genre_at[genre]] = 1.0
        known = [w for w in words(title) if w in self._word_at]
        for word in known:
            row[len(self.genres) + self._word_at[word]] += 1.0 / np.sqrt(len(known))
        bucket = (YEAR_BUCKETS if not year else
                  int(np.clip((year - YEAR_FIRST) // YEAR_STEP, 0, YEAR_BUCKETS - 1)))
        row[len(self.genres) + len(self.vocabulary) + bucket] = 1.0
        return row

    @cached_property
    def _word_at(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocabulary)}

    def vectors(self, movies: Sequence[tuple[str, int | None, Sequence[str]]]) -> np.ndarray:
        """Item vectors of ``(title, year, genres)`` movies."""
        rows = np.stack([self.features(*movie) for movie in movies]) if movies else \
            np.zeros((0, self.weights.shape[0]), np.float32)
        return (rows @ self.weights + self.bias).astype(np.float32)

    def save(self, directory: Path) -> dict:
        np.savez(directory / FILE, weights=self.weights, bias=self.bias)
        (directory / "content_map.json").write_text(json.dumps(
            {"genres": list(self.genres), "vocabulary": list(self.vocabulary),
             "alpha": self.alpha}))
        return {"file": FILE, "features": int(self.weights.shape[0]), "alpha": self.alpha,
                "words": len(self.vocabulary),
                "what": "ridge map from genres, title words, year to the item vectors"}

    @classmethod
    def load(cls, directory: Path) -> ContentMap | None:
        """The artifact's map (None: an older artifact without one)."""
        if not (directory / FILE).is_file():
            return None
        spec = json.loads((directory / "content_map.json").read_text())
        with np.load(directory / FILE) as arrays:
            return cls(tuple(spec["genres"]), tuple(spec["vocabulary"]), arrays["weights"],
                       arrays["bias"], float(spec["alpha"]))


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mean_x, y - mean_y
    gram = xc.T @ xc + alpha * np.eye(x.shape[1], dtype=np.float64)
    weights = np.linalg.solve(gram, xc.T @ yc)
    return weights.astype(np.float32), (mean_y - mean_x @ weights).astype(np.float32)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


def fit(titles: Sequence[str], years: Sequence[int | None], genres: Sequence[Sequence[str]],
        vectors: np.ndarray, data_genres: Sequence[str], seed: int = 0) -> ContentMap:
    """The map from these movies' features to their ``vectors`` (the trained movies)."""
    counts = Counter(w for title in titles for w in set(words(title)))
    vocabulary = tuple(sorted(w for w, c in counts.items() if c >= 2))
    blank = ContentMap(tuple(data_genres), vocabulary,
                       np.zeros((len(data_genres) + len(vocabulary) + YEAR_BUCKETS + 1, 1),
                                np.float32), np.zeros(1, np.float32))
    x = np.stack([blank.features(t, y, g) for t, y, g in zip(titles, years, genres,
                                                             strict=True)]).astype(np.float64)
    y = np.asarray(vectors, dtype=np.float64)
    held = np.random.default_rng(seed).random(len(x)) < 0.1
    scores = {10.0: 0.0}                 # too few movies to choose: a middle penalty
    if held.sum() >= 2 and (~held).sum() >= 2:
        scores = {alpha: _cosine(x[held] @ w + b, y[held]) for alpha in ALPHAS
                  for w, b in [_ridge(x[~held], y[~held], alpha)]}
    alpha = max(scores, key=scores.get)
    weights, bias = _ridge(x, y, alpha)
    return ContentMap(tuple(data_genres), vocabulary, weights, bias, alpha)


def for_movies(movies, item_ids: np.ndarray, item_vectors: np.ndarray, trained: np.ndarray,
               data_genres: Sequence[str]) -> ContentMap:
    """The map of an artifact: ``movies`` (the data set's frame) give each item's features,
    ``trained`` (bool per item) the items it is fitted on."""
    frame = movies.set_index("movie_id").reindex(item_ids)
    chosen = np.flatnonzero(trained)
    years = [None if y != y else int(y) for y in frame["year"].to_numpy()[chosen]]
    return fit(frame["title"].fillna("").to_numpy()[chosen].tolist(), years,
               [tuple(g) if isinstance(g, tuple | list) else () for g in
                frame["genres"].to_numpy()[chosen]],
               np.asarray(item_vectors)[chosen], data_genres)
