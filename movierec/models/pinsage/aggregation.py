"""Liked movies -> one user vector: the single definition shared by training, evaluation
and serving (numpy only, no torch or dgl).

A user (a session's liked list, or a known user's training history) is the
L2-normalized weighted mean of the L2-normalized item vectors of the movies they
liked. Weights come from :func:`history_weights`:

* ``mean``: every liked movie weighs 1.
* ``rating``: a movie rated r weighs ``2 ** (r - 3)`` (3 stars -> 1, 4 -> 2, 5 -> 4;
  1 and 2 stars, which only the leave-last-out split keeps, -> 0.25 and 0.5).

A session's liked list has no ratings, so it uses weight 1 per movie (or the weights
the caller passes). Items are scored by the dot product with the user vector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from movierec.models.artifact import normalize

if TYPE_CHECKING:
    from scipy import sparse

SCHEMES = ("mean", "rating")


def history_weights(ratings: np.ndarray, scheme: str) -> np.ndarray:
    """Per-interaction weights of a known user's history under ``scheme``."""
    ratings = np.asarray(ratings, dtype=np.float32)
    if scheme == "mean":
        return np.ones_like(ratings)
    if scheme == "rating":
        return np.exp2(ratings - 3.0).astype(np.float32)
    raise ValueError(f"unknown aggregation {scheme!r}; known: {', '.join(SCHEMES)}")


def aggregate(item_vectors: np.ndarray, rows: np.ndarray,
              weights: np.ndarray | None = None) -> np.ndarray:
    """One normalized user vector from the item rows ``rows`` (weights default to 1)."""
    chosen = item_vectors[np.asarray(rows, dtype=np.int64)]
    w = np.ones(len(chosen), np.float32) if weights is None else np.asarray(weights, np.float32)
    return normalize(w @ chosen)


def aggregate_matrix(item_vectors: np.ndarray, weights: sparse.spmatrix) -> np.ndarray:
    """Normalized user vectors for a (users x items) sparse matrix of history weights."""
    return normalize(np.asarray(weights @ item_vectors))


def history_matrix(ratings: sparse.csr_matrix, scheme: str) -> sparse.csr_matrix:
    """Turn a (users x items) rating matrix into aggregation weights under ``scheme``."""
    weights = ratings.copy().astype(np.float32)
    weights.data = history_weights(weights.data, scheme)
    return weights
