"""Reference predictors computed beside the model: global mean and user+item biases.

:class:`BiasBaseline` is Surprise's ``BaselineOnly`` with its default ALS options
(10 epochs, ``reg_u=15``, ``reg_i=10``): alternate closed-form updates of the user
and item biases around the global mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, float) - np.asarray(truth, float)) ** 2)))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, float) - np.asarray(truth, float))))


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """RMSE and MAE in stars of predictions clipped to 1-5."""
    clipped = np.clip(pred, 1.0, 5.0)
    return {"rmse": rmse(clipped, truth), "mae": mae(clipped, truth)}


class GlobalMean:
    """Predicts the mean training rating for everything."""

    def fit(self, train: pd.DataFrame) -> GlobalMean:
        self.mean = float(train["rating"].mean())
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.full(len(frame), self.mean)


@dataclass
class BiasBaseline:
    """``mean + b_user + b_item`` fitted by regularized ALS (unknown ids get bias 0)."""

    epochs: int = 10
    reg_user: float = 15.0
    reg_item: float = 10.0
    mean: float = 0.0
    user_bias: dict = field(default_factory=dict)
    item_bias: dict = field(default_factory=dict)

    def fit(self, train: pd.DataFrame) -> BiasBaseline:
        users, u = np.unique(train["user_id"].to_numpy(), return_inverse=True)
        items, i = np.unique(train["movie_id"].to_numpy(), return_inverse=True)
        r = train["rating"].to_numpy().astype(float)
        self.mean = float(r.mean())
        bu, bi = np.zeros(len(users)), np.zeros(len(items))
        n_u, n_i = np.bincount(u), np.bincount(i)
        for _ in range(self.epochs):
            bu = np.bincount(u, r - self.mean - bi[i], len(users)) / (self.reg_user + n_u)
            bi = np.bincount(i, r - self.mean - bu[u], len(items)) / (self.reg_item + n_i)
        self.user_bias = dict(zip(users.tolist(), bu.tolist(), strict=True))
        self.item_bias = dict(zip(items.tolist(), bi.tolist(), strict=True))
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        bu = frame["user_id"].map(self.user_bias).fillna(0.0).to_numpy(float)
        bi = frame["movie_id"].map(self.item_bias).fillna(0.0).to_numpy(float)
        return self.mean + bu + bi


def baseline_scores(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Both baselines fitted on ``train`` and scored on ``test``."""
    truth = test["rating"].to_numpy()
    return {"global_mean": scores(GlobalMean().fit(train).predict(test), truth),
            "bias_als": scores(BiasBaseline().fit(train).predict(test), truth)}
