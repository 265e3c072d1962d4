"""Scoring an exported fusion artifact on its test split, next to two baselines.

Predictions go through the exported files exactly as the product uses them (numpy
user tower, normalized item vectors, ``offset + scale * inner product``, clipped to
1-5), so the numbers describe the artifact, not the in-memory network. The split
and its seed are read from the artifact's metadata, so the test ratings are the
ones held out in training.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from movierec.data.movielens import MovieLens
from movierec.data.splits import make_split
from movierec.errors import DataError
from movierec.models.artifact import read_item_vectors, read_metadata
from movierec.models.fusion.baselines import baseline_scores, scores
from movierec.models.fusion.features import user_features
from movierec.models.fusion.inference import FusionEncoder

COLD_START_SPLIT = "users_80_10_10"


def hidden_ids_key(split: str) -> str:
    """Name of the "user ids hidden" score: a cold-start score only where the test users
    are absent from training (``users_80_10_10``); elsewhere they are warm users whose
    ids are hidden."""
    return "cold_start" if split == COLD_START_SPLIT else "user_ids_hidden"


def predict_frame(encoder: FusionEncoder, item_ids: np.ndarray, item_vectors: np.ndarray,
                  users: pd.DataFrame, frame: pd.DataFrame,
                  hide_user_ids: bool = False) -> np.ndarray:
    """Predicted stars for the (user_id, movie_id) rows of ``frame``."""
    users = users.sort_values("user_id")
    user_ids = users["user_id"].to_numpy()
    feats = user_features(encoder.vocab, users)
    if hide_user_ids:
        feats = feats.hide_ids()
    vectors = encoder.encode_indices(feats.uid, feats.gender, feats.age, feats.occupation)
    user_rows = np.searchsorted(user_ids, frame["user_id"].to_numpy())
    order = np.argsort(item_ids)
    item_rows = order[np.searchsorted(item_ids[order], frame["movie_id"].to_numpy())]
    return encoder.stars(vectors[user_rows], item_vectors[item_rows])


def evaluate_artifact(path: Path, data: MovieLens) -> dict[str, Any]:
    """RMSE/MAE in stars of the artifact (known and hidden user ids) and of the baselines."""
    started = time.monotonic()
    meta = read_metadata(path)
    if meta.get("data_checksum") != data.checksum:
        raise DataError(f"artifact {path} was trained on other data than {data.name} "
                        f"(checksum mismatch)")
    split = make_split(data, meta["split"], meta["split_seed"])
    encoder = FusionEncoder.load(path)
    item_ids, item_vectors = read_item_vectors(path)
    truth = split.test["rating"].to_numpy()
    result: dict[str, Any] = {
        "model": "fusion", "artifact": str(path), "version": meta["version"],
        "dataset": data.name, "split": meta["split"], "split_seed": meta["split_seed"],
        "test_ratings": int(len(truth)), "unit": "stars"}
    hidden = "fusion_" + hidden_ids_key(meta["split"])
    for key, hide in (("fusion", False), (hidden, True)):
        pred = predict_frame(encoder, item_ids, item_vectors, data.users, split.test, hide)
        result[key] = scores(pred, truth)
    result.update(baseline_scores(split.train, split.test))
    result["seconds"] = round(time.monotonic() - started, 2)
    return result


def format_report(result: dict[str, Any]) -> str:
    """A small human-readable table of :func:`evaluate_artifact`'s result."""
    lines = [f"fusion {result['version']} on {result['dataset']} {result['split']} "
             f"(seed {result['split_seed']}, {result['test_ratings']} test ratings, stars)"]
    hidden = "fusion_" + hidden_ids_key(result["split"])
    for key in ("fusion", hidden, "bias_als", "global_mean"):
        lines.append(f"  {key:<22} RMSE {result[key]['rmse']:.4f}  MAE {result[key]['mae']:.4f}")
    return "\n".join(lines)
