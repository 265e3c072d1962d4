"""What the embedder feeds its encoders for a known user: one definition, used by the
embedder service and by the served-paths evaluation (``movierec evaluate serving``).

* History: the user's catalog ratings (:class:`History`, parallel arrays), newest first
  (timestamp descending; ratings of one second most recently recorded first: the
  catalog's order, see :func:`oldest_first`), at most
  ``limit`` of them; the PinSage encoder weighs them with its artifact's rating weights
  (``embed_history``).
* Profile of a catalog user without history: the ml-1m age bucket becomes its
  representative age in years (the fusion encoder maps years back to the bucket).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from movierec import limits
from movierec.data.movielens import bucket_years
from movierec.models.fusion.inference import Profile

#: The whole history the gateway reads (its ``limits.MAX_HISTORY`` newest ratings): on
#: recbole valid it beats the newest 200 (PinSage Recall@10 0.1853 vs 0.1837,
#: docs/evaluation.md); the embedder's cost is a weighted sum over the rows.
DEFAULT_HISTORY_LIMIT = limits.MAX_HISTORY


class RatingLike(Protocol):
    movie_id: int
    rating: float
    timestamp: int


class HistoryEncoder(Protocol):
    def embed_history(self, movie_ids: list[int], ratings: list[float],
                      timestamps: np.ndarray | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class History:
    """A user's ratings as parallel arrays (what the catalog and the embedder exchange)."""

    movie_ids: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray

    @classmethod
    def of(cls, movie_ids, ratings, timestamps) -> History:
        return cls(np.asarray(movie_ids, np.int64), np.asarray(ratings, np.float32),
                   np.asarray(timestamps, np.int64))

    @classmethod
    def from_rows(cls, rows: Iterable[RatingLike]) -> History:
        rows = list(rows)
        return cls.of([r.movie_id for r in rows], [r.rating for r in rows],
                      [r.timestamp for r in rows])

    def newest(self, limit: int) -> History:
        """The ``limit`` newest ratings, newest first. Ratings of the same second keep the
        order they came in: the catalog's, most recently recorded first."""
        order = np.argsort(-self.timestamps, kind="stable")[:limit]
        return History(self.movie_ids[order], self.ratings[order], self.timestamps[order])


def oldest_first(frame: pd.DataFrame) -> pd.DataFrame:
    """Rating rows sorted per user oldest first, the order a sequence reads them in:
    time ascending, ratings of one second in the order they were recorded, which is the
    frame's index order (a MovieLens file's line order, kept by every split; the
    catalog's insertion order in its snapshots). MovieLens stamps half of a user's
    consecutive ratings with the same second, and the order they were recorded in
    predicts the next one (docs/sequence.md, "Ties"). :meth:`History.newest`'s order
    (the catalog's) is this one reversed."""
    return frame.sort_index(kind="stable").sort_values(["user_id", "timestamp"],
                                                       kind="stable")


def newest_first(frame: pd.DataFrame) -> pd.DataFrame:
    """Rating rows sorted per user as the catalog lists them: :func:`oldest_first`
    reversed within each user (time descending, most recently recorded first)."""
    ordered = oldest_first(frame)
    flipped = ordered.iloc[::-1]
    return flipped.iloc[np.argsort(flipped["user_id"].to_numpy(), kind="stable")]


def newest_history(ratings: Iterable[RatingLike], limit: int) -> list[int]:
    """The movie ids of the ``limit`` newest ratings, newest first."""
    return History.from_rows(ratings).newest(limit).movie_ids.tolist()


def embed_user_history(encoder: HistoryEncoder, history: History,
                       limit: int) -> tuple[np.ndarray, list[int]]:
    """(user vector, movie ids used) from a user's ratings, as the embedder serves it."""
    chosen = history.newest(limit)
    ids = chosen.movie_ids.tolist()
    return encoder.embed_history(ids, chosen.ratings.tolist(), chosen.timestamps), ids


def catalog_profile(age_bucket: int, gender: str, occupation: int,
                    user_id: int | None = None) -> Profile:
    """The fusion profile of a catalog user (age bucket code -> representative years)."""
    return Profile(bucket_years(age_bucket), gender, occupation, user_id)
