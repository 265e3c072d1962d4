"""The onboarding protocol: how recommendations improve as a new user's first likes arrive.

On the user cold-start split (``users_80_10_10``: the evaluated users are unseen in
training), each validation/test user's ratings are put in time order (ratings of the
same second in an order drawn with the draw's seed). Their first ``k`` liked movies
(rating >= 4) are given, with the profile, for k in :data:`GIVEN_COUNTS`. So that
every k is scored on the same users and the same targets, a user needs
``max(GIVEN_COUNTS)`` likes; the targets are their relevant (>= 3) ratings after the
last of those, and everything they rated up to it is masked (the given movies among
it). Every row ranks the whole catalog.

Rows: ``combined`` (:mod:`movierec.models.onboarding`, as served), ``profile``
(fusion), ``liked`` (PinSage's liked list), GroupPop, MostPop and EASE folded in from
the given movies (lambda tuned on validation per k). ``liked`` and ``ease`` have no
input at k = 0 and are left out there.

:func:`held_out_ndcg` is the meta-learning papers' view (MeLU, KDD 2019): 10 of the
user's later ratings (any stars, drawn with the seed) ranked by a score, nDCG@3 with
the stars as gains.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from movierec.data.splits import Split
from movierec.evaluation.protocols import MIN_RATING, ProtocolData
from movierec.evaluation.ranking import RankingTask, make_task

GIVEN_COUNTS = (0, 1, 2, 3, 5, 10)
LIKED_STARS = 4
HELD_OUT = 10


def in_time_order(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``frame`` by user, then time; same-second ratings in an order drawn with ``seed``."""
    tie = np.random.default_rng(seed).permutation(len(frame))
    return (frame.assign(_tie=tie).sort_values(["user_id", "timestamp", "_tie"])
            .drop(columns="_tie"))


@dataclass(frozen=True)
class Users:
    """One part's eligible users: their ordered ratings and where their given likes end."""

    ordered: pd.DataFrame     # the eligible users' ratings in time order, with "position"
    cutoff: pd.Series         # user_id -> position of their max(GIVEN_COUNTS)-th like

    @classmethod
    def of(cls, part: pd.DataFrame, seed: int, most: int = max(GIVEN_COUNTS)) -> Users:
        ordered = in_time_order(part, seed)
        ordered = ordered.assign(position=ordered.groupby("user_id").cumcount())
        likes = ordered[ordered["rating"] >= LIKED_STARS]
        nth = likes.assign(n=likes.groupby("user_id").cumcount())
        cutoff = nth[nth["n"] == most - 1].set_index("user_id")["position"]
        later = ordered["position"].to_numpy() > ordered["user_id"].map(cutoff).to_numpy()
        targets = ordered[later & (ordered["rating"] >= MIN_RATING["cold_start"]).to_numpy()]
        cutoff = cutoff[cutoff.index.isin(targets["user_id"].unique())]
        return cls(ordered[ordered["user_id"].isin(cutoff.index)], cutoff)

    def _limit(self) -> np.ndarray:
        return self.ordered["user_id"].map(self.cutoff).to_numpy()

    def given(self, k: int) -> pd.DataFrame:
        """Each user's first ``k`` likes (with stars and times), oldest first."""
        likes = self.ordered[self.ordered["rating"] >= LIKED_STARS]
        return likes[likes.groupby("user_id").cumcount() < k]

    def seen(self) -> pd.DataFrame:
        """Everything each user rated up to their last given like (masked)."""
        return self.ordered[self.ordered["position"].to_numpy() <= self._limit()]

    def targets(self) -> pd.DataFrame:
        later = self.ordered[self.ordered["position"].to_numpy() > self._limit()]
        return later[later["rating"] >= MIN_RATING["cold_start"]]

    def held_out(self, seed: int, count: int = HELD_OUT) -> pd.DataFrame:
        """``count`` of each user's later ratings (any stars), drawn with ``seed``;
        users with fewer later ratings are left out."""
        later = self.ordered[self.ordered["position"].to_numpy() > self._limit()]
        sizes = later.groupby("user_id")["movie_id"].transform("size")
        later = later[sizes.to_numpy() >= count]
        return (later.sample(frac=1.0, random_state=seed).groupby("user_id").head(count)
                .sort_values(["user_id", "movie_id"]))


def task(users: Users, k: int, user_ids: np.ndarray, movie_ids: np.ndarray,
         percentiles: np.ndarray | None) -> RankingTask:
    """The ranking task of ``k`` given likes."""
    return make_task(user_ids, movie_ids, [users.given(k)], [users.seen()], users.targets(),
                     percentiles)


def protocol_at(base: ProtocolData, split: Split, k: int, seed: int) -> ProtocolData:
    """``base`` (the cold-start protocol of this split) with its tasks replaced by the
    onboarding tasks of ``k`` given likes under draw ``seed``."""
    pct = base.valid.percentiles
    valid, test = (task(Users.of(part, seed), k, base.user_ids, base.movie_ids, pct)
                   for part in (split.valid, split.test))
    return replace(base, valid=valid, test=test)


def held_out_ndcg(scores: np.ndarray, stars: np.ndarray, at: int = 3) -> np.ndarray:
    """nDCG@``at`` per row of ``scores`` ranking the row's items, gains = ``stars``
    (both ``(users, items)``); ties in score keep the items' order."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :at]
    discount = 1.0 / np.log2(np.arange(2, at + 2))
    dcg = (np.take_along_axis(stars, order, axis=1) * discount).sum(axis=1)
    ideal = (-np.sort(-stars, axis=1)[:, :at] * discount).sum(axis=1)
    return dcg / np.maximum(ideal, 1e-12)
