"""The two evaluation protocols as ranking tasks, and the PinSage scorer.

* ``recbole`` (split ``recbole_811``): users are represented by their training part;
  validation masks training items; test masks training and validation items (as
  RecBole does) and looks for the test part.
* ``leave_last_out`` (split ``leave_last_out``): validation ranks each user's
  second-last item from their training history; test ranks the last item using the
  user's whole history (training items plus the second-last one), all of it masked.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from movierec.data.movielens import MovieLens
from movierec.data.splits import Split
from movierec.models.pinsage.aggregation import aggregate_matrix, history_matrix
from movierec.models.pinsage.evaluate.ranking import RankingTask, Scorer, make_task

PROTOCOL_SPLITS = {"recbole": "recbole_811", "leave_last_out": "leave_last_out"}


def split_for(protocol: str) -> str:
    try:
        return PROTOCOL_SPLITS[protocol]
    except KeyError:
        raise ValueError(f"unknown protocol {protocol!r}; known: "
                         f"{', '.join(PROTOCOL_SPLITS)}") from None


def ranking_tasks(data: MovieLens, split: Split) -> tuple[RankingTask, RankingTask]:
    """(validation task, test task) of ``split`` over all users and movies of ``data``."""
    movie_ids = np.sort(data.movies["movie_id"].to_numpy(np.int64))
    user_ids = np.unique(np.concatenate([f["user_id"].to_numpy(np.int64)
                                         for f in (split.train, split.valid, split.test)]))
    valid = make_task(user_ids, movie_ids, [split.train], [split.train], split.valid)
    test_history = [split.train, split.valid] if split.name == "leave_last_out" else [split.train]
    test = make_task(user_ids, movie_ids, test_history, [split.train, split.valid], split.test)
    return valid, test


def embedding_scorer(item_vectors: np.ndarray, history: sparse.csr_matrix,
                     aggregation: str) -> Scorer:
    """Score = dot product of each item vector with the user's aggregated history vector."""
    weights = history_matrix(history, aggregation)
    return lambda rows: aggregate_matrix(item_vectors, weights[rows]) @ item_vectors.T
