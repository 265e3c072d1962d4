"""Full-ranking evaluation: every user is scored against every movie.

A :class:`RankingTask` holds, over one user and item index space, the history a model
may use to represent each user, the items to mask from the ranking (items the user
already interacted with), and the relevant (held-out) items. :func:`evaluate` ranks
all movies for each user with relevant items, masks, takes the top k and computes
:mod:`~movierec.evaluation.metrics` (coverage and popularity too when the task knows
its items' popularity percentiles).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from movierec.evaluation.metrics import summarize, top_k

#: scores (len(rows), num_items) for the users at ``rows`` of the task
Scorer = Callable[[np.ndarray], np.ndarray]
KS = (10, 20)


def interactions(frames: list[pd.DataFrame], user_ids: np.ndarray,
                 movie_ids: np.ndarray) -> sparse.csr_matrix:
    """(users x items) matrix of the frames' ratings (last one wins on duplicates)."""
    frame = pd.concat(frames) if frames else pd.DataFrame(columns=["user_id", "movie_id"])
    frame = frame.drop_duplicates(["user_id", "movie_id"], keep="last")
    rows = np.searchsorted(user_ids, frame["user_id"].to_numpy(np.int64))
    cols = np.searchsorted(movie_ids, frame["movie_id"].to_numpy(np.int64))
    values = frame["rating"].to_numpy(np.float32)
    return sparse.csr_matrix((values, (rows, cols)), shape=(len(user_ids), len(movie_ids)))


@dataclass(frozen=True)
class RankingTask:
    """One evaluation: histories, masks and relevant items over shared indices."""

    user_ids: np.ndarray         # int64, sorted: row -> user id
    movie_ids: np.ndarray        # int64, sorted: column -> movie id
    history: sparse.csr_matrix   # ratings a model may use to represent the user
    exclude: sparse.csr_matrix   # items masked from the ranking
    relevant: sparse.csr_matrix  # held-out items to find
    percentiles: np.ndarray | None = None  # items' training-popularity percentiles (0-100)
    history_frame: pd.DataFrame | None = None  # the history's rating rows (with timestamps)

    @property
    def rows(self) -> np.ndarray:
        """Users with at least one relevant item (the ones evaluated)."""
        return np.flatnonzero(np.diff(self.relevant.indptr) > 0)


def make_task(user_ids: np.ndarray, movie_ids: np.ndarray, history: list[pd.DataFrame],
              exclude: list[pd.DataFrame], relevant: pd.DataFrame,
              percentiles: np.ndarray | None = None) -> RankingTask:
    """Build a task from rating frames (all users and movies must be in the id arrays)."""
    return RankingTask(user_ids, movie_ids, interactions(history, user_ids, movie_ids),
                       interactions(exclude, user_ids, movie_ids),
                       interactions([relevant], user_ids, movie_ids), percentiles,
                       pd.concat(history) if history else None)


def vector_scorer(user_vectors: np.ndarray, item_vectors: np.ndarray) -> Scorer:
    """Score = inner product of a row of ``user_vectors`` (one per task row) with each item."""
    return lambda rows: user_vectors[rows] @ item_vectors.T


@dataclass(frozen=True)
class Ranked:
    """Each evaluated user's top items (masked full ranking) and which of them are relevant."""

    ranked: np.ndarray        # (users, depth) item indices, best first
    hits: np.ndarray          # (users, depth) bool: the item at that rank is relevant
    num_relevant: np.ndarray  # (users,) relevant items of each user


def rank(scorer: Scorer, task: RankingTask, depth: int, batch: int = 1024) -> Ranked:
    """Rank every movie for each of the task's users (``task.rows``), masked, top ``depth``."""
    rows = task.rows
    hit_rows, ranked_rows = [], []
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        scores = np.array(scorer(chunk), dtype=np.float32)
        masked = task.exclude[chunk]
        scores[np.repeat(np.arange(len(chunk)), np.diff(masked.indptr)), masked.indices] = -np.inf
        ranked = top_k(scores, depth)
        relevant = task.relevant[chunk].toarray() > 0
        hit_rows.append(np.take_along_axis(relevant, ranked, axis=1))
        ranked_rows.append(ranked)
    return Ranked(np.vstack(ranked_rows), np.vstack(hit_rows),
                  np.diff(task.relevant.indptr)[rows])


def evaluate(scorer: Scorer, task: RankingTask, ks: tuple[int, ...] = KS,
             batch: int = 1024) -> dict[str, float]:
    """Mean metrics of ``scorer`` over the task's users (full ranking, masked)."""
    found = rank(scorer, task, max(ks), batch)
    result = summarize(found.hits, found.num_relevant, ks, found.ranked, task.percentiles)
    result["users"] = float(len(found.num_relevant))
    return result
