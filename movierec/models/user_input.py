"""What the embedder feeds its encoders for a known user: one definition, used by the
embedder service and by the served-paths evaluation (``movierec evaluate serving``).

* History: the user's catalog ratings, newest first (timestamp descending, movie id
  ascending on ties: the catalog's order), at most ``limit`` of them; the PinSage
  encoder weighs them with its artifact's rating weights (``embed_history``).
* Profile of a catalog user without history: the ml-1m age bucket becomes its
  representative age in years (the fusion encoder maps years back to the bucket).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np

from movierec.models.fusion.inference import Profile

DEFAULT_HISTORY_LIMIT = 200
AGE_BUCKET_YEARS = {1: 16, 18: 21, 25: 30, 35: 40, 45: 47, 50: 53, 56: 60}


class RatingLike(Protocol):
    movie_id: int
    rating: float
    timestamp: int


class HistoryEncoder(Protocol):
    def embed_history(self, movie_ids: list[int], ratings: list[float]) -> np.ndarray: ...


def newest_history(ratings: Iterable[RatingLike], limit: int) -> list[RatingLike]:
    """The ``limit`` newest ratings, newest first (ties: smaller movie id first)."""
    ordered = sorted(ratings, key=lambda r: (-int(r.timestamp), int(r.movie_id)))
    return ordered[:limit]


def embed_user_history(encoder: HistoryEncoder, ratings: Iterable[RatingLike],
                       limit: int) -> tuple[np.ndarray, list[int]]:
    """(user vector, movie ids used) from a user's ratings, as the embedder serves it."""
    chosen = newest_history(ratings, limit)
    ids = [int(r.movie_id) for r in chosen]
    return encoder.embed_history(ids, [float(r.rating) for r in chosen]), ids


def catalog_profile(age_bucket: int, gender: str, occupation: int,
                    user_id: int | None = None) -> Profile:
    """The fusion profile of a catalog user (age bucket code -> representative years)."""
    return Profile(AGE_BUCKET_YEARS.get(age_bucket, 30), gender, occupation, user_id)
