"""Ordered item sequences for SASRec, in the order the embedder serves them.

Every rating is an interaction (the published ml-1m preprocessing's rule). A user's
sequence is ordered by timestamp ascending, ratings of one second in the order they
were recorded (:func:`movierec.models.user_input.oldest_first`): the reverse of the
catalog's newest-first order, so a served history reversed is exactly a training
sequence. Items are indexed 1..N in movie-id order; 0 pads. :func:`shuffle_ties`
draws a random order inside each second instead (``--shuffle-ties``), for data whose
recording order inside a second means nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from movierec.models.user_input import oldest_first


@dataclass(frozen=True)
class ItemIndex:
    """Movie ids <-> item indices 1..N (0 is padding)."""

    movie_ids: np.ndarray  # sorted int64, index i+1 <-> movie_ids[i]

    @classmethod
    def of(cls, movie_ids) -> ItemIndex:
        return cls(np.unique(np.asarray(movie_ids, np.int64)))

    @property
    def size(self) -> int:
        """Number of items (without padding)."""
        return len(self.movie_ids)

    def lookup(self, movie_ids) -> np.ndarray:
        """Item index of each movie id; 0 where the movie is unknown."""
        ids = np.asarray(movie_ids, np.int64).reshape(-1)
        pos = np.clip(np.searchsorted(self.movie_ids, ids), 0, max(self.size - 1, 0))
        known = self.size > 0 and self.movie_ids[pos] == ids
        return np.where(known, pos + 1, 0).astype(np.int64)


def timed_sequences(frame: pd.DataFrame, index: ItemIndex
                    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each user's (item indices, timestamps) in sequence order (unknown movies dropped)."""
    frame = oldest_first(frame)
    items = index.lookup(frame["movie_id"].to_numpy())
    users = frame["user_id"].to_numpy(np.int64)
    times = frame["timestamp"].to_numpy(np.int64)
    keep = items > 0
    items, users, times = items[keep], users[keep], times[keep]
    if not len(users):
        return {}
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return {int(users[s]): (items[s:e], times[s:e]) for s, e in zip(starts, ends, strict=True)}


def sequences(frame: pd.DataFrame, index: ItemIndex) -> dict[int, np.ndarray]:
    """Each user's item indices in sequence order (unknown movies dropped)."""
    return {user: items for user, (items, _) in timed_sequences(frame, index).items()}


def shuffle_ties(items: np.ndarray, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``items`` (in time order) with the items of each same-second group in a random
    order, so that no fixed order inside a group is learnt."""
    return items[np.lexsort((rng.random(len(items)), times))]


#: rows of the gap table: 0 pads, 1 "no earlier rating known" (a sequence's first, or a
#: list given without times), 2 + floor(log2(1 + seconds since the rating before))
GAP_ROWS = 34


def gap_buckets(times: np.ndarray | None, length: int | None = None) -> np.ndarray:
    """The gap row (1..GAP_ROWS-1) of each rating of a sequence in time order: how long
    after the rating before it it came, in doubling buckets (the same second, 1-2 s,
    3-6 s, 7-14 s, ..., years). ``times`` None: ``length`` ratings with no known gap."""
    if times is None:
        return np.ones(int(length or 0), np.int64)
    seconds = np.maximum(np.diff(np.asarray(times, np.int64), prepend=0), 0)
    rows = 2 + np.minimum(np.log2(1.0 + seconds).astype(np.int64), GAP_ROWS - 3)
    rows[:1] = 1
    return rows


def left_padded(seqs: list[np.ndarray], length: int) -> np.ndarray:
    """The last ``length`` items of each sequence, left-padded with 0."""
    out = np.zeros((len(seqs), length), np.int64)
    for row, seq in enumerate(seqs):
        tail = seq[-length:]
        if len(tail):
            out[row, length - len(tail):] = tail
    return out
