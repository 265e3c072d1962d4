"""The onboarding rows' scorers: the served combination and its single sources.

Vectors come from the embedder's own code on the exported artifacts: the fusion
profile vector without an id (``FusionEncoder.encode``), PinSage's liked-list vector
(``PinSageEncoder.embed_liked``) of the given movies, and for ``combined`` the scaled
parts of :func:`movierec.models.onboarding.query_parts`, each scored against its
model's exported item vectors and summed over the candidates the retriever scores
(:func:`movierec.models.onboarding.blended`, the gateway's masks applied first).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from movierec.evaluation.baselines import Factory
from movierec.evaluation.protocols import ProtocolData
from movierec.evaluation.ranking import RankingTask, Scorer
from movierec.evaluation.serving import ItemSpace, ServedModels
from movierec.models import onboarding
from movierec.models.user_input import catalog_profile

#: what the gateway asks the retriever for on a first page of 10 (top_k + its 10 extra)
SERVED_DEPTH = 20


class OnboardingScorers:
    """Factories of the combined, profile and liked rows over one protocol's users."""

    def __init__(self, models: ServedModels, data: ProtocolData, users: pd.DataFrame) -> None:
        self.fusion, self.profile_items = models.serving("profile")
        self.pinsage, self.liked_items = models.serving("liked")
        self.spreads = (onboarding.Spread.of(_known(self.profile_items)),
                        onboarding.Spread.of(_known(self.liked_items)))
        self.users = users.set_index("user_id").reindex(data.user_ids)
        self.movie_ids = data.movie_ids
        self.liked_known = set(self.pinsage.movie_ids.tolist())

    def profiles(self, rows: np.ndarray) -> np.ndarray:
        """Fusion vectors of the rows' profiles (no user id: they are new users)."""
        found = self.users.iloc[rows]
        return self.fusion.encode([catalog_profile(int(a), str(g), int(o)) for g, a, o in
                                   zip(found["gender"], found["age"], found["occupation"],
                                       strict=True)])

    def _liked(self, task: RankingTask, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(liked vectors, number of known given movies) of the rows."""
        vectors = np.zeros((len(rows), self.pinsage.dim), np.float32)
        counts = np.zeros(len(rows), np.int64)
        for i, r in enumerate(rows):
            given = [int(m) for m in self.movie_ids[task.history[r].indices]
                     if int(m) in self.liked_known]
            if given:
                vectors[i], counts[i] = self.pinsage.embed_liked(given), len(given)
        return vectors, counts

    def profile(self, task: RankingTask) -> Scorer:
        return lambda rows: self.profile_items.scores(self.profiles(rows))

    def liked(self, task: RankingTask) -> Scorer:
        return lambda rows: self.liked_items.scores(self._liked(task, rows)[0])

    def parts(self, task: RankingTask, rows: np.ndarray, rule: tuple[float, float] | None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Scores of the rows under each scaled part (no liked part: zeros)."""
        profiles = self.profiles(rows)
        liked, counts = self._liked(task, rows)
        scaled_p, scaled_l = np.zeros_like(profiles), np.zeros_like(liked)
        for i in range(len(rows)):
            parts = onboarding.query_parts(profiles[i], liked[i], int(counts[i]),
                                           *self.spreads, rule)
            scaled_p[i] = parts[onboarding.PROFILE_MODEL]
            scaled_l[i] = parts.get(onboarding.LIKED_MODEL, 0.0)
        by_liked = self.liked_items.scores(scaled_l)
        by_liked[counts == 0] = 0.0     # no liked part: the profile's alone
        return self.profile_items.scores(scaled_p), by_liked

    def combined(self, rule: tuple[float, float] | None = None) -> Factory:
        """The served combination under weight rule ``rule`` (default: the served one)."""
        def factory(task: RankingTask) -> Scorer:
            def score(rows: np.ndarray) -> np.ndarray:
                by_profile, by_liked = self.parts(task, rows, rule)
                masked = task.exclude[rows]
                at = (np.repeat(np.arange(len(rows)), np.diff(masked.indptr)), masked.indices)
                by_profile[at], by_liked[at] = -np.inf, -np.inf
                return onboarding.blended([by_profile, by_liked], SERVED_DEPTH)
            return score
        return factory

    def exact(self, task: RankingTask, rows: np.ndarray,
              rule: tuple[float, float] | None = None) -> np.ndarray:
        """The combined score of every movie (no candidate cut): for ranking given items."""
        by_profile, by_liked = self.parts(task, rows, rule)
        return by_profile + by_liked


def _known(items: ItemSpace) -> np.ndarray:
    return items.vectors[items.known]
