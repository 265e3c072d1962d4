"""The evaluation protocols (docs/evaluation.md) as ranking tasks over one split.

Every protocol ranks all movies of the data set for each evaluated user, masks what
the user is known to have seen, and looks for held-out relevant movies:

* ``recbole`` (split ``recbole_811``, ratings >= 3): a user is represented by their
  training part; validation masks it and looks for the validation part; test masks
  training + validation and looks for the test part (as RecBole does).
* ``cold_start`` (split ``users_80_10_10``): models are trained on the training users
  only. For each validation/test user the first :data:`GIVEN` relevant (>= 3) ratings
  by timestamp (ties by file order) are given, with their stars; every later relevant
  rating is a target; the given movies are masked. Users with fewer than
  ``GIVEN + 1`` relevant ratings are skipped. Validation users tune, test users report.
* ``temporal`` (split ``time_80_10_10``, a global time split): validation ranks what
  users rated in the next 10 % of time from their training ratings; test ranks the
  newest 10 % from training plus validation, all of it masked. Ratings >= 3 are relevant.
* ``leave_last_out`` (split ``leave_last_out``, the DGL PinSage example's): validation
  ranks each user's second-last item from their training history; test ranks the last
  item from the whole history (training plus second-last), all of it masked. Every
  rating counts as an interaction.
* ``global_time`` (split ``time_90``): trained on the oldest 90 % of ratings (before T);
  validation ranks each user's older half of their ratings after T from their training
  ratings, test the newer half from training plus validation. Every rating counts as an
  interaction (what users watch next). Users with no rating before T are *cold*: they
  are left out of both tasks and scored apart (:attr:`ProtocolData.cold`: their
  validation part is the history, their test part the targets).

:class:`ProtocolData` also carries the interactions baselines are fitted on
(``train``: the relevant training interactions), which popularity percentiles are
computed from, and each user's gender x age cell (for GroupPop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from movierec.data.movielens import AGE_BUCKETS, MovieLens
from movierec.data.splits import Split, make_split
from movierec.evaluation.metrics import popularity_percentiles
from movierec.evaluation.ranking import RankingTask, Scorer, interactions, make_task
from movierec.models.pinsage.aggregation import aggregate_matrix, history_matrix

PROTOCOL_SPLITS = {"recbole": "recbole_811", "cold_start": "users_80_10_10",
                   "leave_last_out": "leave_last_out", "temporal": "time_80_10_10",
                   "global_time": "time_90"}
#: smallest rating that counts as relevant, per protocol
MIN_RATING = {"recbole": 3, "cold_start": 3, "leave_last_out": 1, "temporal": 3,
              "global_time": 1}
#: protocols whose test comes after validation in time (test users' history: both)
FORWARD = ("leave_last_out", "temporal", "global_time")
GIVEN = 5


def split_for(protocol: str) -> str:
    try:
        return PROTOCOL_SPLITS[protocol]
    except KeyError:
        raise ValueError(f"unknown protocol {protocol!r}; known: "
                         f"{', '.join(PROTOCOL_SPLITS)}") from None


def protocol_of(split_name: str) -> str:
    """The protocol that evaluates models trained on ``split_name``."""
    for protocol, name in PROTOCOL_SPLITS.items():
        if name == split_name:
            return protocol
    raise ValueError(f"no evaluation protocol for split {split_name!r}")


@dataclass(frozen=True)
class ProtocolData:
    """One protocol on one split: baseline training data and the two ranking tasks."""

    name: str
    split: Split
    train: sparse.csr_matrix  # (users x movies) relevant training interactions (ratings)
    cells: np.ndarray         # int64 per user row: gender x age cell, -1 if unknown
    valid: RankingTask
    test: RankingTask
    cold: RankingTask | None = None   # users unseen in training, scored apart (global_time)

    @property
    def user_ids(self) -> np.ndarray:
        return self.test.user_ids

    @property
    def movie_ids(self) -> np.ndarray:
        return self.test.movie_ids


def relevant(frame: pd.DataFrame, min_rating: int = MIN_RATING["recbole"]) -> pd.DataFrame:
    return frame[frame["rating"] >= min_rating]


def given_and_targets(frame: pd.DataFrame, given: int = GIVEN) -> tuple[pd.DataFrame,
                                                                         pd.DataFrame]:
    """(first ``given`` relevant ratings, later relevant ratings) of each eligible user."""
    kept = relevant(frame).sort_index()
    ordered = kept.sort_values(["user_id", "timestamp"], kind="stable")
    rank = ordered.groupby("user_id").cumcount().to_numpy()
    size = ordered.groupby("user_id")["user_id"].transform("size").to_numpy()
    eligible = size > given
    return (ordered[eligible & (rank < given)].sort_index(),
            ordered[eligible & (rank >= given)].sort_index())


def demographic_cells(users: pd.DataFrame, user_ids: np.ndarray) -> np.ndarray:
    """Gender x age-bucket cell (0..13) of each user id, -1 for users not in ``users``."""
    table = users.set_index("user_id")
    found = table.reindex(user_ids)
    ages = {code: i for i, code in enumerate(AGE_BUCKETS)}
    age = found["age"].map(ages)
    gender = found["gender"].map({"M": 0, "F": 1})
    cell = gender * len(AGE_BUCKETS) + age
    return cell.fillna(-1).to_numpy(np.int64)


def build(data: MovieLens, protocol: str, seed: int) -> ProtocolData:
    """Split ``data`` for ``protocol`` with ``seed`` and build its tasks."""
    return from_split(data, make_split(data, split_for(protocol), seed=seed))


def from_split(data: MovieLens, split: Split) -> ProtocolData:
    """The protocol of an already made split."""
    name = protocol_of(split.name)
    movie_ids = np.sort(data.movies["movie_id"].to_numpy(np.int64))
    user_ids = np.unique(data.ratings["user_id"].to_numpy(np.int64))
    fit = relevant(split.train, MIN_RATING[name])
    train = interactions([fit], user_ids, movie_ids)
    counts = np.diff(train.tocsc().indptr)
    pct = popularity_percentiles(counts)
    if name == "cold_start":
        valid, test = (_cold_task(user_ids, movie_ids, part, pct)
                       for part in (split.valid, split.test))
    else:
        valid, test = _tasks(split, name, user_ids, movie_ids, pct)
    cold = _cold_users_task(split, user_ids, movie_ids, pct) if name == "global_time" else None
    return ProtocolData(name, split, train, demographic_cells(data.users, user_ids),
                        valid, test, cold)


def _tasks(split: Split, name: str, user_ids: np.ndarray, movie_ids: np.ndarray,
           pct: np.ndarray) -> tuple[RankingTask, RankingTask]:
    """Validation and test of a protocol whose users are known from training."""
    valid_part, test_part = split.valid, split.test
    if name == "global_time":   # cold users are scored apart
        warm = split.train["user_id"].unique()
        valid_part = valid_part[valid_part["user_id"].isin(warm)]
        test_part = test_part[test_part["user_id"].isin(warm)]
    valid = make_task(user_ids, movie_ids, [split.train], [split.train], valid_part, pct)
    history = [split.train, split.valid] if name in FORWARD else [split.train]
    test = make_task(user_ids, movie_ids, history, [split.train, split.valid], test_part, pct)
    return valid, test


def _cold_users_task(split: Split, user_ids: np.ndarray, movie_ids: np.ndarray,
                     pct: np.ndarray) -> RankingTask:
    """Users with no training rating: their validation part given, their test part found."""
    warm = split.train["user_id"].unique()
    given = split.valid[~split.valid["user_id"].isin(warm)]
    targets = split.test[~split.test["user_id"].isin(warm)]
    return make_task(user_ids, movie_ids, [given], [given], targets, pct)


def _cold_task(user_ids: np.ndarray, movie_ids: np.ndarray, part: pd.DataFrame,
               percentiles: np.ndarray) -> RankingTask:
    given, targets = given_and_targets(part)
    return make_task(user_ids, movie_ids, [given], [given], targets, percentiles)


def ranking_tasks(data: MovieLens, split: Split) -> tuple[RankingTask, RankingTask]:
    """(validation task, test task) of ``split`` over all users and movies of ``data``."""
    built = from_split(data, split)
    return built.valid, built.test


def frame_of(matrix: sparse.csr_matrix, user_ids: np.ndarray,
             movie_ids: np.ndarray) -> pd.DataFrame:
    """(user_id, movie_id, rating) rows of a task matrix."""
    coo = matrix.tocoo()
    return pd.DataFrame({"user_id": user_ids[coo.row], "movie_id": movie_ids[coo.col],
                         "rating": coo.data})


def embedding_scorer(item_vectors: np.ndarray, history: sparse.csr_matrix,
                     aggregation: str) -> Scorer:
    """PinSage during training: dot product of each item vector with the user's
    aggregated history vector (:mod:`movierec.models.pinsage.aggregation`)."""
    weights = history_matrix(history, aggregation)
    return lambda rows: aggregate_matrix(item_vectors, weights[rows]) @ item_vectors.T
