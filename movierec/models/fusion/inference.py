"""Serving-side fusion inference in pure numpy: profiles -> user vectors -> top-N.

:class:`FusionEncoder` recomputes the (small) user tower from the exported
``user_tower.npz``, which is exact (tested equal to Paddle) and takes well under a
millisecond for one profile, without importing Paddle. A profile is an age in
years (mapped to the ml-1m bucket), gender ``"M"``/``"F"``, an occupation id 0-20
and an optional user id. An id the model never saw in training (a new user) takes
the cold-start path: the learned "unknown" id slot, so the vector then depends on
gender, age and occupation only. Invalid values raise
:class:`~movierec.errors.InvalidArgument` naming the field.

A user vector's inner product with an exported item vector is the model's ranking
score (see :mod:`.export` for the layout); :func:`predicted_stars` turns a (user
vector, item vector) pair into the predicted stars. Ranking all movies is the
retriever's job (Milvus, metric IP) and, offline, :mod:`movierec.evaluation`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from movierec import validation
from movierec.data.movielens import age_bucket
from movierec.errors import DataError
from movierec.models.artifact import latest, read_metadata
from movierec.models.fusion.features import (
    CELLS,
    UNKNOWN,
    Vocab,
    age_index,
    cell_features,
    gender_index,
    index_of,
)


@dataclass(frozen=True)
class Profile:
    """What the product knows about a user."""

    age: int
    gender: str
    occupation: int
    user_id: int | None = None


def validate(profile: Profile) -> None:
    """Raise InvalidArgument naming the first bad field of ``profile`` (the shared rules)."""
    validation.profile("", profile.age, profile.gender, profile.occupation, profile.user_id)


def resolve(path: Path | None, root: Path | None = None) -> Path:
    """An artifact version directory: ``path`` itself or the latest fusion version."""
    return Path(path) if path is not None else latest("fusion", root)


def predicted_stars(user_vectors: np.ndarray, item_vectors: np.ndarray, scale: float,
                    offset: float) -> np.ndarray:
    """Stars (1-5) the model predicts for exported user and item vectors (row-wise,
    broadcasting): ``clip(offset + scale * cos, 1, 5)`` with ``cos`` the cosine of the
    two towers, i.e. of the vectors without their last ``CELLS + 1`` (bias) components."""
    user = np.asarray(user_vectors, dtype=np.float64)[..., :-1 - CELLS]
    item = np.asarray(item_vectors, dtype=np.float64)[..., :-1 - CELLS]
    norm = np.maximum(np.linalg.norm(user, axis=-1), 1e-12)
    return np.clip(offset + scale * np.sum(user * item, axis=-1) / norm, 1.0, 5.0)


class FusionEncoder:
    """Numpy user tower of one artifact version."""

    def __init__(self, weights: dict[str, np.ndarray], vocab: Vocab, scale: float,
                 offset: float, rank_scale: Sequence[float]) -> None:
        self.w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        self.vocab = vocab
        self.known_users = np.asarray(vocab.user_ids, dtype=np.int64)
        self.scale, self.offset = scale, offset
        self.rank_scale = np.asarray(rank_scale, dtype=np.float32)  # [profile path, known id]
        self.dim = int(self.w["out.bias"].shape[0]) + CELLS + 1

    @classmethod
    def load(cls, path: Path | None = None) -> FusionEncoder:
        path = resolve(path)
        with np.load(path / "user_tower.npz") as arrays:
            weights = dict(arrays)
        score = read_metadata(path)["score"]
        if "rank_scale" not in score:
            raise DataError(f"fusion artifact {path} predates the ranking vectors; retrain it")
        return cls(weights, Vocab.load(path / "vocab.json"), score["scale"], score["offset"],
                   score["rank_scale"])

    def knows(self, user_id: int) -> bool:
        """Whether ``user_id`` has a trained id embedding (else: cold-start path)."""
        return bool(index_of(self.known_users, np.array([user_id]))[0] != UNKNOWN)

    def _branch(self, name: str, index: np.ndarray) -> np.ndarray:
        emb = self.w[f"{name}_emb.weight"][index]
        return emb @ self.w[f"{name}_fc.weight"] + self.w[f"{name}_fc.bias"]

    def encode_indices(self, uid: np.ndarray, gender: np.ndarray, age: np.ndarray,
                       occupation: np.ndarray) -> np.ndarray:
        """Exported user vectors ``[rank_scale * unit user-tower output, one-hot gender x age
        cell, 1]`` from dense tower inputs (as in training); ``rank_scale`` is the profile
        path's for the unknown id, the known users' otherwise."""
        hidden = np.concatenate([self._branch("uid", uid), self._branch("gender", gender),
                                 self._branch("age", age), self._branch("job", occupation)],
                                axis=-1)
        out = np.tanh(hidden @ self.w["out.weight"] + self.w["out.bias"])
        norms = np.sqrt(np.sum(out * out, axis=-1, keepdims=True))
        scale = self.rank_scale[(np.asarray(uid) != UNKNOWN).astype(np.int64)][:, None]
        unit = scale * out / np.maximum(norms, 1e-12)
        return np.concatenate([unit, cell_features(gender, age)], axis=1).astype(np.float32)

    def encode(self, profiles: Sequence[Profile]) -> np.ndarray:
        """``[len(profiles), dim]`` user vectors; validates every profile."""
        for profile in profiles:
            validate(profile)
        ids = np.array([p.user_id or 0 for p in profiles], dtype=np.int64)
        uid = np.where(ids > 0, index_of(self.known_users, ids), UNKNOWN)
        return self.encode_indices(
            uid, gender_index([p.gender for p in profiles]),
            age_index([age_bucket(p.age) for p in profiles]),
            np.array([p.occupation for p in profiles], dtype=np.int64))

    def encode_one(self, age: int, gender: str, occupation: int,
                   user_id: int | None = None) -> np.ndarray:
        """One profile -> one ``[dim]`` user vector."""
        return self.encode([Profile(age, gender, occupation, user_id)])[0]

    def reading(self, user_vector: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """How a user vector's score reads: (vector, offset, low, high) such that
        ``clip(offset + vector . item_vector, low, high)`` is :func:`predicted_stars` of
        the pair. The retriever computes it for each hit; no model code is needed there."""
        user = np.asarray(user_vector, dtype=np.float64)
        head = user[:-1 - CELLS]
        vector = np.zeros_like(user)
        vector[:-1 - CELLS] = self.scale * head / max(float(np.linalg.norm(head)), 1e-12)
        return vector.astype(np.float32), float(self.offset), 1.0, 5.0

    def stars(self, user_vectors: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
        """Predicted stars (1-5) of exported user and item vectors (:func:`predicted_stars`)."""
        return predicted_stars(user_vectors, item_vectors, self.scale, self.offset)


__all__ = ["FusionEncoder", "Profile", "predicted_stars", "validate"]
