"""The item-bias weight of the served user vector, fitted on validation after training.

Training pools a random half of each user's history (``--target-frac``) and scores
``u . q_i + b_i``; serving pools the whole history, so the bags are twice as large and
the trade-off between the cosine and the popularity-like bias learned for half bags is
not the one that ranks best for whole ones, and it changes with a bag's size. The user
vector's last column (the bias weight, :class:`UserTower`) therefore becomes
``beta(n) = beta0 * (n / n_ref) ** power``, ``n`` the number of movies in the bag,
``n_ref`` the median bag size of the validation users. ``beta0`` and ``power`` are the
point of a small fixed grid (``beta0 = 1, power = 0``, the column as trained, included)
with the highest validation Recall@10 + NDCG@10 of the served scores (the evaluation's
own ranking code); ties keep the earlier grid point. Two weights are fitted: one for a
known user's rated history (the artifact's rating weights: the user-id path) and one for
a liked list (weight 1 per movie: the liked-ids path), each on the validation users'
histories weighted that way. Milvus' search is unchanged (inner product with the same
item vectors); the artifact stores ``scale = beta0 * n_ref ** -power`` and ``power`` in
its tower metadata (``bias_*`` and ``liked_bias_*``, :func:`~.encoder.write_tower`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from movierec.evaluation.ranking import RankingTask, evaluate
from movierec.models.pinsage.aggregation import UserTower, bag_sizes, history_matrix

#: the grid (beta0 at the median bag, power); (1, 0) first: as trained
BETAS = (1.0, 0.95, 0.98, 1.02, 1.05, 1.08, 1.1, 1.15, 1.2)
POWERS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12)


@dataclass(frozen=True)
class Calibration:
    """The chosen bias weight and what validation said of it and of the trained one."""

    beta0: float
    power: float
    reference_size: float
    valid: dict[str, float]      # validation metrics with this calibration
    trained: dict[str, float]    # validation metrics of the column as trained (beta = 1)

    @property
    def scale(self) -> float:
        return float(self.beta0 * self.reference_size ** -self.power)

    def apply(self, tower: UserTower) -> UserTower:
        return replace(tower, bias_scale=self.scale, bias_power=self.power)

    def metadata(self) -> dict:
        keep = ("recall@10", "ndcg@10")
        return {"beta0": self.beta0, "power": self.power, "reference_size": self.reference_size,
                "grid": {"beta0": list(BETAS), "power": list(POWERS)},
                "criterion": "validation recall@10 + ndcg@10",
                "valid": {k: round(self.valid[k], 5) for k in keep},
                "valid_as_trained": {k: round(self.trained[k], 5) for k in keep}}


@dataclass(frozen=True)
class Calibrations:
    """The fitted weights of a rated history (``history``) and of a liked list (``liked``)."""

    history: Calibration
    liked: Calibration

    def metadata(self) -> dict:
        return {"history": self.history.metadata(), "liked": self.liked.metadata()}


def fit_both(tower: UserTower, item_vectors: np.ndarray, valid: RankingTask,
             aggregation: str) -> Calibrations:
    """Fit the rated-history weight (``aggregation``) and the liked-list one (weights 1)."""
    history = fit_bias_weight(tower, item_vectors, valid, aggregation)
    liked = (history if aggregation == "mean"
             else fit_bias_weight(tower, item_vectors, valid, "mean"))
    return Calibrations(history, liked)


def fit_bias_weight(tower: UserTower, item_vectors: np.ndarray, valid: RankingTask,
                    aggregation: str, betas: tuple[float, ...] = BETAS,
                    powers: tuple[float, ...] = POWERS) -> Calibration:
    """The grid point of the served bias weight that validates best (see the module doc);
    ``trained`` holds the metrics of the first point (``BETAS[0], POWERS[0]`` = 1, 0)."""
    if not tower.bias:
        raise ValueError("the tower has no item-bias column to calibrate")
    weights = history_matrix(valid.history, aggregation)
    sizes = bag_sizes(weights)
    reference = float(np.median(sizes[sizes > 0])) if (sizes > 0).any() else 1.0
    base = replace(tower, bias=False).vectors(weights) @ item_vectors[:, :-1].T
    bias = item_vectors[:, -1]
    fits = []
    for beta0 in betas:
        for power in powers:
            candidate = Calibration(beta0, power, reference, {}, {})
            beta = candidate.apply(tower).bias_weight(sizes)
            metrics = evaluate(lambda rows, b=beta: base[rows] + b[rows, None] * bias, valid)
            fits.append((metrics["recall@10"] + metrics["ndcg@10"], candidate, metrics))
    best = max(fits, key=lambda fit: fit[0])  # the first of equal scores: (1, 0) on ties
    return replace(best[1], valid=best[2], trained=fits[0][2])
