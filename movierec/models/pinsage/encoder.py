"""Light inference over an exported PinSage artifact: numpy only, no torch or dgl.

>>> encoder = PinSageEncoder.load()                  # latest artifacts/pinsage version
>>> vector = encoder.embed_liked([1, 260, 1196])     # unit vector, see .aggregation
>>> encoder.vectors @ vector                          # what Milvus ranks by (metric IP)

The user vector is the artifact's :class:`movierec.models.pinsage.aggregation.UserTower`
(its input vectors, pooling, dense layers and bias column, all exported arrays): the
same code training validates with and evaluation scores with, so served
recommendations are the ones that were measured. An artifact without a user tower
(the original design) pools the unit item vectors themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from movierec.errors import InvalidArgument
from movierec.models.artifact import item_rows, latest, read_item_vectors, read_metadata
from movierec.models.pinsage.aggregation import UserTower, history_weights

MODEL = "pinsage"
FIELD = "liked_movie_ids"
INPUTS_FILE = "input_vectors.npy"
LAYERS_FILE = "user_layers.npz"


def read_tower(path: Path, meta: dict[str, Any], item_vectors: np.ndarray) -> UserTower:
    """The artifact's user tower for rated histories (rows in item_ids.npy order); none ->
    the shared design. :func:`liked_tower` gives the one for liked lists."""
    spec = meta.get("user_tower")
    if not spec:
        return UserTower.shared(item_vectors)
    inputs = np.load(path / INPUTS_FILE)
    with np.load(path / LAYERS_FILE) as arrays:
        layers = tuple((arrays[f"weight{i}"], arrays[f"bias{i}"]) for i in range(spec["layers"]))
    return UserTower(inputs, spec["pool"], layers, bool(spec["bias"]), bool(spec["unit"]),
                     float(spec.get("bias_scale", 1.0)), float(spec.get("bias_power", 0.0)))


def liked_tower(meta: dict[str, Any], tower: UserTower) -> UserTower:
    """``tower`` with the bias weight fitted for liked lists (the history's if none was)."""
    spec = meta.get("user_tower") or {}
    return replace(tower, bias_scale=float(spec.get("liked_bias_scale", tower.bias_scale)),
                   bias_power=float(spec.get("liked_bias_power", tower.bias_power)))


def write_tower(path: Path, tower: UserTower, liked: UserTower | None = None) -> dict[str, Any]:
    """Store ``tower``'s arrays under ``path``; returns its ``user_tower`` metadata, with
    the bias weight of ``liked`` (the same arrays, another weight) for liked lists."""
    liked = liked or tower
    np.save(path / INPUTS_FILE, tower.inputs.astype(np.float32))
    arrays = {f"{name}{i}": value.astype(np.float32) for i, pair in enumerate(tower.layers)
              for name, value in zip(("weight", "bias"), pair, strict=True)}
    np.savez(path / LAYERS_FILE, **arrays)
    return {"pool": tower.pool, "layers": len(tower.layers), "bias": tower.bias,
            "unit": tower.unit, "bias_scale": tower.bias_scale, "bias_power": tower.bias_power,
            "liked_bias_scale": liked.bias_scale, "liked_bias_power": liked.bias_power,
            "inputs": INPUTS_FILE, "weights": LAYERS_FILE}


class PinSageEncoder:
    """Maps liked movie ids to a user vector and ranks movies against it."""

    def __init__(self, movie_ids: np.ndarray, vectors: np.ndarray,
                 metadata: dict[str, Any] | None = None, tower: UserTower | None = None) -> None:
        order = np.argsort(movie_ids, kind="stable")
        self.movie_ids = np.asarray(movie_ids, dtype=np.int64)[order]
        self.vectors = np.asarray(vectors, dtype=np.float32)[order]
        self.metadata = metadata or {}
        tower = tower or UserTower.shared(vectors)
        self.tower = replace(tower, inputs=np.asarray(tower.inputs, np.float32)[order])
        if self.tower.dim != self.dim:
            raise ValueError(f"user vectors have {self.tower.dim} dimensions, items {self.dim}")
        #: a liked list (weights 1 or the caller's) has its own fitted bias weight
        self.liked_tower = liked_tower(self.metadata, self.tower)

    @classmethod
    def load(cls, path: Path | None = None, root: Path | None = None) -> PinSageEncoder:
        """Load an artifact version directory (default: the latest pinsage version)."""
        path = Path(path) if path is not None else latest(MODEL, root)
        ids, vectors = read_item_vectors(path)
        meta = read_metadata(path)
        return cls(ids, vectors, meta, read_tower(path, meta, vectors))

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def aggregation(self) -> str:
        """How a known user's rated history is weighted (see :mod:`.aggregation`)."""
        return str(self.metadata.get("aggregation", "mean"))

    def rows(self, movie_ids: Sequence[int]) -> np.ndarray:
        """Row of each movie id; unknown ids raise InvalidArgument(liked_movie_ids)."""
        return item_rows(self.movie_ids, movie_ids, FIELD)

    def embed_liked(self, movie_ids: Sequence[int],
                    weights: Sequence[float] | None = None) -> np.ndarray:
        """The user vector of a liked list (weights default 1), see :mod:`.aggregation`."""
        return self._embed(self.liked_tower, movie_ids, weights)

    def embed_history(self, movie_ids: Sequence[int], ratings: Sequence[float],
                      timestamps: np.ndarray | None = None) -> np.ndarray:
        """A known user's vector from their rated history, weighted by the artifact's
        scheme (a bag of ratings: their times are not read)."""
        weights = history_weights(np.asarray(ratings), self.aggregation)
        return self._embed(self.tower, movie_ids, weights)

    def _embed(self, tower: UserTower, movie_ids: Sequence[int],
               weights: Sequence[float] | None) -> np.ndarray:
        if len(movie_ids) == 0:
            raise InvalidArgument(FIELD, "at least one liked movie is required")
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float32)
            if weights.shape != (len(movie_ids),) or (weights < 0).any() or weights.sum() <= 0:
                raise InvalidArgument("weights", "need one non-negative weight per liked movie")
        return tower.vector(self.rows(movie_ids), weights)

