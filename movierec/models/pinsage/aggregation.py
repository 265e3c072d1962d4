"""Liked movies -> one user vector: the single definition shared by training, evaluation
and serving (numpy here; :class:`movierec.models.pinsage.model.UserTower` is the same
computation in torch).

A user (a session's liked list, or a known user's history) is a weighted bag of movies.
Weights come from :func:`history_weights`:

* ``mean``: every liked movie weighs 1.
* ``rating``: a movie rated r weighs ``2 ** (r - 3)`` (3 stars -> 1, 4 -> 2, 5 -> 4;
  1 and 2 stars, which only the leave-last-out split keeps, -> 0.25 and 0.5).

A session's liked list has no ratings, so it uses weight 1 per movie (or the weights
the caller passes). The :class:`UserTower` turns the bag into the user vector:

1. pool the movies' *input* vectors ``x = sum_j w_j p_j`` and scale it (``pool``):
   ``l2`` -> ``x / |x|``; ``sqrt`` -> ``x / |w|`` (Mult-DAE's normalized input);
   ``mean`` -> ``x / sum(w)``;
2. apply the dense layers, each ``tanh(x W + b)``, and (``unit``) L2-normalize;
3. with an item bias, append the bias weight ``bias_scale * n ** bias_power`` (``n``: the
   number of movies in the bag; 1 and 0 as trained, so the column is 1), so that the inner
   product with an exported item vector ``[q_i, b_i]`` is ``u . q_i + beta(n) b_i``.
   Training pools about half of a user's history and serving all of it, so the export
   fits ``beta`` on validation (:mod:`movierec.models.pinsage.calibration`).

Items are scored by the inner product of the user vector with the exported item
vectors (what Milvus computes with metric IP). :meth:`UserTower.shared` is the
original design: input vectors = item vectors (unit), ``l2`` pooling, no layers, no bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from movierec.models.artifact import normalize

if TYPE_CHECKING:
    from scipy import sparse

SCHEMES = ("mean", "rating")
POOLS = ("l2", "sqrt", "mean")


def history_weights(ratings: np.ndarray, scheme: str) -> np.ndarray:
    """Per-interaction weights of a known user's history under ``scheme``."""
    ratings = np.asarray(ratings, dtype=np.float32)
    if scheme == "mean":
        return np.ones_like(ratings)
    if scheme == "rating":
        return np.exp2(ratings - 3.0).astype(np.float32)
    raise ValueError(f"unknown aggregation {scheme!r}; known: {', '.join(SCHEMES)}")


def history_matrix(ratings: sparse.csr_matrix, scheme: str) -> sparse.csr_matrix:
    """Turn a (users x items) rating matrix into aggregation weights under ``scheme``."""
    weights = ratings.copy().astype(np.float32)
    weights.data = history_weights(weights.data, scheme)
    return weights


def bag_sizes(weights: sparse.spmatrix) -> np.ndarray:
    """Movies in each row's bag (non-zero weights): the ``n`` of the bias weight."""
    return np.asarray((weights != 0).sum(axis=1)).ravel()


def pool_scale(pooled: np.ndarray, total: np.ndarray, squares: np.ndarray,
               pool: str) -> np.ndarray:
    """Scale rows of ``pooled`` = weights @ inputs under ``pool`` (see the module doc);
    ``total`` and ``squares`` are each row's sum of weights and of squared weights."""
    if pool == "l2":
        return normalize(pooled)
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; known: {', '.join(POOLS)}")
    norm = np.sqrt(squares) if pool == "sqrt" else total
    norm = np.asarray(norm, np.float32).reshape(-1, 1)
    return (pooled / np.where(norm == 0, 1, norm)).astype(np.float32)


@dataclass(frozen=True)
class UserTower:
    """Weighted bags of movies -> user vectors (numpy, exported arrays only)."""

    inputs: np.ndarray                                   # (N, d) input vector per item row
    pool: str = "l2"
    layers: tuple[tuple[np.ndarray, np.ndarray], ...] = ()  # (W (d, d'), b (d',)), tanh each
    bias: bool = False                                   # append the item-bias weight column
    unit: bool = True                                    # L2-normalize before that column
    bias_scale: float = 1.0                              # bias weight = scale * n ** power
    bias_power: float = 0.0

    @classmethod
    def shared(cls, item_vectors: np.ndarray) -> UserTower:
        """The original design: normalized weighted mean of the (unit) item vectors."""
        return cls(np.asarray(item_vectors, dtype=np.float32))

    @property
    def dim(self) -> int:
        """Size of the user vector (= the exported item vectors' size)."""
        width = self.layers[-1][0].shape[1] if self.layers else self.inputs.shape[1]
        return int(width + self.bias)

    def bias_weight(self, counts: np.ndarray) -> np.ndarray:
        """The item-bias column's value for bags of ``counts`` movies."""
        counts = np.maximum(np.asarray(counts, np.float64), 1.0)
        return (self.bias_scale * counts ** self.bias_power).astype(np.float32)

    def _finish(self, x: np.ndarray, counts: np.ndarray) -> np.ndarray:
        for weight, offset in self.layers:
            x = np.tanh(x @ weight + offset)
        if self.unit:
            x = normalize(x)
        if self.bias:
            x = np.concatenate([x, self.bias_weight(counts).reshape(-1, 1)], axis=-1)
        return x.astype(np.float32)

    def vector(self, rows: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """One user vector from the item rows ``rows`` (weights default to 1)."""
        chosen = self.inputs[np.asarray(rows, dtype=np.int64)]
        w = np.ones(len(chosen), np.float32) if weights is None else np.asarray(weights, np.float32)
        pooled = pool_scale((w @ chosen)[None], w.sum(), np.square(w).sum(), self.pool)
        return self._finish(pooled, np.array([np.count_nonzero(w)]))[0]

    def vectors(self, weights: sparse.spmatrix) -> np.ndarray:
        """User vectors for a (users x items) sparse matrix of bag weights."""
        pooled = np.asarray(weights @ self.inputs, dtype=np.float32)
        total = np.asarray(weights.sum(axis=1))
        squares = np.asarray(weights.multiply(weights).sum(axis=1))
        return self._finish(pool_scale(pooled, total, squares, self.pool), bag_sizes(weights))


def user_scorer(tower: UserTower, item_vectors: np.ndarray, history: sparse.csr_matrix,
                scheme: str):
    """rows -> (len(rows), N) scores of the users at ``rows`` of ``history`` (ratings),
    weighted by ``scheme``: exactly the served user vectors times the item vectors."""
    weights = history_matrix(history, scheme)
    return lambda rows: tower.vectors(weights[rows]) @ item_vectors.T


def aggregate_matrix(item_vectors: np.ndarray, weights: sparse.spmatrix) -> np.ndarray:
    """The shared design's user vectors for a sparse matrix of history weights."""
    return UserTower.shared(item_vectors).vectors(weights)
