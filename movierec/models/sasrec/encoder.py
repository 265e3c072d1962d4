"""SASRec inference over an exported artifact: numpy only, no torch.

>>> encoder = SasRecEncoder.load()                       # latest artifacts/sasrec version
>>> vector = encoder.embed_sequence([260, 1196, 1210])   # oldest first
>>> encoder.vectors @ vector                             # what Milvus ranks by (metric IP)

Repeats :class:`movierec.models.sasrec.model.SasRec`'s forward pass in eval mode for
one sequence (no padding needed: padded keys are masked in training, so the unpadded
sequence at the right-aligned positions gives the same hidden state; tested against
torch). The embedder's ``EmbedHistory`` passes a history newest first (the catalog's
order); a liked list is read in the order given, the last one the newest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from movierec.errors import InvalidArgument
from movierec.models.artifact import item_rows, latest, read_item_vectors, read_metadata
from movierec.models.sasrec.data import gap_buckets

MODEL = "sasrec"
WEIGHTS_FILE = "weights.npz"
EPS = 1e-5


def _norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * weight + bias


@dataclass(frozen=True)
class Weights:
    """The network's arrays by torch ``state_dict`` name, and its shape."""

    arrays: dict[str, np.ndarray]
    heads: int
    layers: int
    max_len: int
    positions: str = "newest"   # model.Dims.positions

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def block(self, i: int, x: np.ndarray, last: bool = False) -> np.ndarray:
        """One pre-norm block over ``x`` (n, d), causal; ``last``: only the newest row's
        output (all rows still serve as keys and values), what the final block needs."""
        p = f"blocks.{i}."
        n, dim = x.shape
        qkv = _norm(x, self[p + "norm1.weight"], self[p + "norm1.bias"]) @ self[
            p + "qkv.weight"].T + self[p + "qkv.bias"]
        head = dim // self.heads
        q, k, v = (qkv[:, j * dim:(j + 1) * dim].reshape(n, self.heads, head).transpose(1, 0, 2)
                   for j in range(3))
        if last:            # the newest row attends to every row: no mask needed
            q, x = q[:, -1:], x[-1:]
        att = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(head))
        if not last:
            att = att + np.triu(np.full((n, n), -np.inf, np.float32), 1)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(1, 0, 2).reshape(len(x), dim)
        x = x + y @ self[p + "out.weight"].T + self[p + "out.bias"]
        h = _norm(x, self[p + "norm2.weight"], self[p + "norm2.bias"])
        h = np.maximum(h @ self[p + "ff1.weight"].T + self[p + "ff1.bias"], 0.0)
        return x + h @ self[p + "ff2.weight"].T + self[p + "ff2.bias"]

    def encode(self, items: np.ndarray, times: np.ndarray | None = None) -> np.ndarray:
        """Hidden state after the last of ``items`` (indices 1..N, oldest first);
        ``times`` their rating times, read when the network has a gap table (None: no
        gap known)."""
        table = self["items.weight"]
        x = table[items[-self.max_len:]] * np.float32(np.sqrt(table.shape[1]))
        if "gaps.weight" in self.arrays:
            x = x + self["gaps.weight"][gap_buckets(times, len(items))[-self.max_len:]]
        first = self.max_len - len(x) if self.positions == "newest" else 0
        x = x + self["positions.weight"][first:first + len(x)]
        for i in range(self.layers):
            x = self.block(i, x, last=i == self.layers - 1)
        return _norm(x[-1], self["norm.weight"], self["norm.bias"]).astype(np.float32)


class SasRecEncoder:
    """Maps an ordered list of movie ids to a user vector."""

    def __init__(self, movie_ids: np.ndarray, weights: Weights,
                 metadata: dict[str, Any] | None = None) -> None:
        self.movie_ids = np.asarray(movie_ids, np.int64)
        if (np.diff(self.movie_ids) <= 0).any():
            raise ValueError("item ids must be sorted and unique (item index order)")
        self.weights = weights
        self.vectors = weights["items.weight"][1:]
        self.metadata = metadata or {}

    @classmethod
    def load(cls, path: Path | None = None, root: Path | None = None) -> SasRecEncoder:
        """Load an artifact version directory (default: the latest sasrec version)."""
        path = Path(path) if path is not None else latest(MODEL, root)
        meta = read_metadata(path)
        ids, _ = read_item_vectors(path)
        with np.load(path / WEIGHTS_FILE) as loaded:
            arrays = {k: loaded[k].astype(np.float32) for k in loaded.files}
        dims = meta["dims"]
        return cls(ids, Weights(arrays, int(dims["heads"]), int(dims["layers"]),
                                int(dims["max_len"]), dims.get("positions", "newest")), meta)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def rows(self, movie_ids: Sequence[int]) -> np.ndarray:
        """Item index (1..N) of each movie id; unknown ids raise InvalidArgument."""
        return item_rows(self.movie_ids, movie_ids) + 1

    def embed_sequence(self, movie_ids: Sequence[int],
                       timestamps: Sequence[int] | None = None) -> np.ndarray:
        """The user vector after watching ``movie_ids`` (oldest first), at ``timestamps``
        (unix seconds, oldest first) when known."""
        if len(movie_ids) == 0:
            raise InvalidArgument("liked_movie_ids", "at least one movie is required")
        times = None if timestamps is None else np.asarray(timestamps, np.int64)
        return self.weights.encode(self.rows(movie_ids), times)

    def embed_liked(self, movie_ids: Sequence[int],
                    weights: Sequence[float] | None = None) -> np.ndarray:
        """A liked list in the order given (the last the newest); zero-weight movies are
        left out (a sequence has no weights)."""
        if weights is not None:
            movie_ids = [m for m, w in zip(movie_ids, weights, strict=True) if w > 0]
        return self.embed_sequence(movie_ids)

    def embed_history(self, movie_ids: Sequence[int], ratings: Sequence[float],
                      timestamps: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """A known user's history, newest first (the catalog's order), with its rating
        times when known: every rating is an interaction, whatever its stars (the model
        was trained so)."""
        times = None if timestamps is None else np.asarray(timestamps, np.int64)[::-1]
        return self.embed_sequence(list(movie_ids)[::-1], times)
