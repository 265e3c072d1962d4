"""Deterministic train/validation/test splits of a data set's ratings.

* ``random_90_10``: a seeded random 10 % of all ratings is the test set, the rest is
  training (rating prediction, RMSE). ``valid`` is empty; models carve their own
  early-stopping slice out of ``train`` with :func:`holdout`.
* ``recbole_811``: ratings >= 3 only; each user's interactions are shuffled with the
  seed and cut 8:1:1 into train/valid/test the way RecBole's ``RS: [0.8, 0.1, 0.1]``
  with ``group_by: user`` does (ranking protocol).
* ``leave_last_out``: per user, the last interaction by time is the test item and the
  second-last the validation item (ties broken by file order); users with fewer than
  three interactions keep everything in training.
* ``time_80_10_10``: a global time split: the oldest 80 % of all ratings, the next 10 %,
  the newest 10 % (the temporal holdout a retrained model is validated on).
* ``time_90``: a global time split at T, the 90th percentile of rating times: the oldest
  90 % of the ratings train; each user's ratings after T, in time order, split in two:
  the older half validates, the newer half (and a single rating) tests. Users with no
  rating before T are cold (see :func:`movierec.evaluation.protocols.from_split`).
* ``users_80_10_10``: a seeded 80/10/10 split of the *users* (cut with
  :func:`recbole_cuts`); every rating of a user goes to that user's part (user cold
  start: valid and test users are unseen in training).

Each frame keeps the ratings columns and the original row index.
:func:`training_ratings` says which ratings a model may train on for a split.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from movierec.data.movielens import MovieLens

SPLITS = ("random_90_10", "recbole_811", "leave_last_out", "users_80_10_10", "time_80_10_10",
          "time_90")
DEFAULT_SEED = 2026


@dataclass(frozen=True)
class Split:
    """Three disjoint parts of one data set's ratings."""

    name: str
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def make_split(data: MovieLens, name: str, seed: int = DEFAULT_SEED) -> Split:
    """Build split ``name`` (one of :data:`SPLITS`) of ``data`` with ``seed``."""
    if name == "random_90_10":
        return _random_90_10(data.ratings, seed)
    if name == "recbole_811":
        return _recbole_811(data.ratings, seed)
    if name == "leave_last_out":
        return _leave_last_out(data.ratings)
    if name == "users_80_10_10":
        return _users_80_10_10(data.ratings, seed)
    if name == "time_80_10_10":
        return _time_80_10_10(data.ratings)
    if name == "time_90":
        return _time_90(data.ratings)
    raise ValueError(f"unknown split {name!r}; known: {', '.join(SPLITS)}")


def training_ratings(data: MovieLens, split: Split) -> pd.DataFrame:
    """Every rating a model may train on for ``split`` without seeing held-out data.

    ``random_90_10`` and ``leave_last_out``: the training part. ``recbole_811``: every
    rating outside the validation and test parts (ratings below 3, which that split
    drops and never counts as relevant, included). ``users_80_10_10``: every rating of
    the training users (the training part).
    """
    if split.name == "recbole_811":
        held_out = split.valid.index.union(split.test.index)
        return data.ratings.drop(index=held_out)
    return split.train


def trained_through(ratings: pd.DataFrame) -> int:
    """The time (unix seconds) of the newest rating a model trained on: every rating after
    it is one the model never saw (what a fair comparison of two versions is judged on)."""
    return int(ratings["timestamp"].max()) if len(ratings) else 0


def holdout(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``frame`` randomly into (rest, ``fraction`` of the rows)."""
    order = np.random.default_rng(seed).permutation(len(frame))
    cut = int(round(len(frame) * fraction))
    return frame.iloc[np.sort(order[cut:])], frame.iloc[np.sort(order[:cut])]


def _random_90_10(ratings: pd.DataFrame, seed: int) -> Split:
    train, test = holdout(ratings, 0.1, seed)
    return Split("random_90_10", train, ratings.iloc[0:0], test)


def recbole_cuts(total: int, ratios: tuple[float, ...] = (0.8, 0.1, 0.1)) -> list[int]:
    """Part sizes for ``total`` interactions, RecBole's ``_calcu_split_ids`` rule."""
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def _recbole_811(ratings: pd.DataFrame, seed: int) -> Split:
    kept = ratings[ratings["rating"] >= 3]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(kept))
    shuffled = kept.iloc[order]
    users = shuffled["user_id"].to_numpy()
    grouped = np.argsort(users, kind="stable")
    part = np.empty(len(shuffled), dtype=np.int8)
    bounds = np.flatnonzero(np.diff(users[grouped])) + 1
    for block in np.split(grouped, bounds):
        train_n, valid_n, _ = recbole_cuts(len(block))
        part[block[:train_n]] = 0
        part[block[train_n:train_n + valid_n]] = 1
        part[block[train_n + valid_n:]] = 2
    pieces = [shuffled[part == k].sort_index() for k in range(3)]
    return Split("recbole_811", *pieces)


def _leave_last_out(ratings: pd.DataFrame) -> Split:
    position = np.arange(len(ratings))
    frame = ratings.assign(_pos=position).sort_values(["user_id", "timestamp", "_pos"],
                                                      kind="stable")
    from_end = frame.groupby("user_id").cumcount(ascending=False).to_numpy()
    counts = frame.groupby("user_id")["user_id"].transform("size").to_numpy()
    eligible = counts >= 3
    test = frame[(from_end == 0) & eligible]
    valid = frame[(from_end == 1) & eligible]
    train = frame[(from_end >= 2) | ~eligible]
    return Split("leave_last_out", *(p.drop(columns="_pos").sort_index()
                                     for p in (train, valid, test)))


def _users_80_10_10(ratings: pd.DataFrame, seed: int) -> Split:
    users = np.unique(ratings["user_id"].to_numpy())
    shuffled = np.random.default_rng(seed).permutation(users)
    train_n, valid_n, _ = recbole_cuts(len(shuffled))
    valid_users = shuffled[train_n:train_n + valid_n]
    test_users = shuffled[train_n + valid_n:]
    owner = ratings["user_id"]
    valid, test = owner.isin(valid_users), owner.isin(test_users)
    return Split("users_80_10_10", ratings[~(valid | test)], ratings[valid], ratings[test])


def _time_80_10_10(ratings: pd.DataFrame) -> Split:
    """A global time split: the oldest 80 % of the ratings train, the next 10 % validate,
    the newest 10 % test (ties in time by file order), for every user alike: what a
    model trained up to a day faces after it."""
    position = np.arange(len(ratings))
    order = np.lexsort((position, ratings["timestamp"].to_numpy()))
    train_n, valid_n, _ = recbole_cuts(len(ratings))
    part = np.empty(len(ratings), dtype=np.int8)
    part[order[:train_n]] = 0
    part[order[train_n:train_n + valid_n]] = 1
    part[order[train_n + valid_n:]] = 2
    return Split("time_80_10_10", *(ratings[part == k] for k in range(3)))


def _time_90(ratings: pd.DataFrame) -> Split:
    """The oldest 90 % train (ties in time by file order); each user's later ratings,
    ordered by time, go half to validation (the older) and half to test."""
    position = np.arange(len(ratings))
    order = np.lexsort((position, ratings["timestamp"].to_numpy()))
    cut = int(round(0.9 * len(ratings)))
    after = np.zeros(len(ratings), dtype=bool)
    after[order[cut:]] = True
    later = ratings[after]
    later = later.iloc[np.lexsort((np.arange(len(later)), later["timestamp"].to_numpy(),
                                   later["user_id"].to_numpy()))]
    rank = later.groupby("user_id").cumcount().to_numpy()
    size = later.groupby("user_id")["user_id"].transform("size").to_numpy()
    to_valid = rank < size // 2
    return Split("time_90", ratings[~after], later[to_valid].sort_index(),
                 later[~to_valid].sort_index())


#: the file ``movierec data holdout-movies`` writes beside the data set: the held-out ids
HELD_OUT = "heldout.json"


def holdout_movies(data: MovieLens, fraction: float, seed: int) -> tuple[MovieLens, list[int]]:
    """``data`` without a seeded ``fraction`` of its rated movies (their ratings and rows),
    and their ids: the item cold-start protocol (movierec.evaluation.new_movies)."""
    rated = np.sort(data.ratings["movie_id"].unique())
    chosen = np.sort(np.random.default_rng(seed).choice(
        rated, int(round(fraction * len(rated))), replace=False))
    kept = replace(data, ratings=data.ratings[~data.ratings["movie_id"].isin(chosen)],
                   movies=data.movies[~data.movies["movie_id"].isin(chosen)], checksum="")
    return kept, chosen.tolist()
