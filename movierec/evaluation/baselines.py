"""Non-neural baselines fitted on a protocol's training interactions.

Each baseline is fitted once on ``train`` (users x movies, any value > 0 is an
interaction) and returns, for a task, a :data:`Factory` result: a scorer that ranks
from that task's ``history`` (so one fit serves validation and test).

* MostPop: an item's score is its number of training interactions.
* RecentPop: MostPop counted over the last ``days`` (30) before the newest training
  interaction only (what is popular *now*; ties by all-time popularity).
* GroupPop: the item's number of training interactions within the user's gender x age
  cell; the global count breaks ties (divided so that it never outweighs one cell
  interaction), so a cell without interactions falls back to MostPop.
* ItemKNN (RecBole's ``ItemKNN``): cosine similarity between items' binary user
  columns, ``shrink`` added to the denominator, only the ``k`` most similar items kept
  per item; a user's score for item i is the sum of the similarities between i and the
  items in their history. ``k`` is tuned on validation.
* EASE (Steck 2019): ``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1`` (so
  ``diag(B) = 0``); a user's scores are ``x_u B`` for their binary history ``x_u``.
  ``lambda`` is tuned on validation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import sparse

from movierec.evaluation.ranking import RankingTask, Scorer

#: builds a scorer for one task (validation or test) from a fitted model
Factory = Callable[[RankingTask], Scorer]
#: validation grids (1-2-5 steps; few given items favour heavy smoothing, so they go far)
KNN_GRID = (25, 50, 100, 200, 400, 800, 1600, 3200)
EASE_GRID = (100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 50000.0,
             100000.0, 200000.0, 500000.0, 1000000.0, 2000000.0)


def binary(matrix: sparse.spmatrix) -> sparse.csr_matrix:
    return (sparse.csr_matrix(matrix) > 0).astype(np.float32)


def item_counts(train: sparse.spmatrix) -> np.ndarray:
    return np.asarray(binary(train).sum(axis=0), dtype=np.float64).ravel()


def most_pop(train: sparse.spmatrix) -> Factory:
    counts = item_counts(train).astype(np.float32)

    def factory(task: RankingTask) -> Scorer:
        return lambda rows: np.broadcast_to(counts, (len(rows), len(counts)))
    return factory


RECENT_DAYS = 30


def recent_pop(frame, movie_ids: np.ndarray, days: int = RECENT_DAYS) -> Factory:
    """Interactions of ``frame`` (training rating rows) in the ``days`` before its newest,
    per movie of ``movie_ids`` (sorted); all-time counts break ties."""
    stamps = frame["timestamp"].to_numpy(np.int64)
    cols = np.searchsorted(movie_ids, frame["movie_id"].to_numpy(np.int64))
    total = np.bincount(cols, minlength=len(movie_ids)).astype(np.float64)
    recent = stamps >= (stamps.max() if len(stamps) else 0) - days * 86_400
    counts = np.bincount(cols[recent], minlength=len(movie_ids)).astype(np.float64)
    scores = (counts + total / (total.max() + 1.0)).astype(np.float32)

    def factory(task: RankingTask) -> Scorer:
        return lambda rows: np.broadcast_to(scores, (len(rows), len(scores)))
    return factory


def group_pop(train: sparse.spmatrix, cells: np.ndarray) -> Factory:
    """Popularity within each user's cell (``cells[row]``, -1: no cell), MostPop ties."""
    x = binary(train)
    counts = item_counts(x)
    known = cells >= 0
    num_cells = int(cells.max()) + 1 if known.any() else 0
    members = sparse.csr_matrix((np.ones(int(known.sum()), np.float32),
                                 (cells[known], np.flatnonzero(known))),
                                shape=(num_cells, x.shape[0]))
    per_cell = np.asarray((members @ x).todense(), dtype=np.float64)
    table = np.vstack([per_cell, np.zeros((1, x.shape[1]))])  # last row: no cell
    table = (table + counts / (counts.max() + 1.0)).astype(np.float32)
    row_of = np.where(known, cells, num_cells)

    def factory(task: RankingTask) -> Scorer:
        return lambda rows: table[row_of[rows]]
    return factory


class ItemKNN:
    """Cosine item-item similarities of one training matrix, pruned per ``k``."""

    def __init__(self, train: sparse.spmatrix, shrink: float = 0.0) -> None:
        x = binary(train)
        co = np.asarray((x.T @ x).todense(), dtype=np.float32)
        norms = np.sqrt(np.diag(co))
        self.sim = co / (np.outer(norms, norms) + shrink + 1e-12)
        np.fill_diagonal(self.sim, 0.0)

    def pruned(self, k: int) -> np.ndarray:
        """Similarities with only each item's (column's) ``k`` largest kept."""
        sim = self.sim.copy()
        if k < sim.shape[0]:
            weakest = np.argpartition(-sim, k, axis=0)[k:]
            np.put_along_axis(sim, weakest, 0.0, axis=0)
        return sim

    def factory(self, k: int) -> Factory:
        sim = self.pruned(k)
        return lambda task: _history_scorer(task, sim)


class Ease:
    """EASE on one training matrix; the Gram matrix is computed once for all lambdas."""

    def __init__(self, train: sparse.spmatrix) -> None:
        x = binary(train)
        self.gram = np.asarray((x.T @ x).todense(), dtype=np.float64)

    def weights(self, lam: float) -> np.ndarray:
        gram = self.gram.copy()
        gram[np.diag_indices_from(gram)] += lam
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)
        np.fill_diagonal(b, 0.0)
        return b.astype(np.float32)

    def factory(self, lam: float) -> Factory:
        b = self.weights(lam)
        return lambda task: _history_scorer(task, b)


def _history_scorer(task: RankingTask, item_item: np.ndarray) -> Scorer:
    history = binary(task.history)
    return lambda rows: np.asarray(history[rows] @ item_item)
