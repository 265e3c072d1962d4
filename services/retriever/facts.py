"""What explains and reads a hit, kept beside the searches: its stored vector and reasons.

A search that carries liked movies (``SearchRequest.liked_ids``) names, for each hit,
the first movie of the hit's stored ``reasons`` row that the user liked
(:func:`movierec.models.reasons.pick_reason`); one that carries a reading
(``SearchRequest.reading``, fusion's stars) computes ``clip(offset + w . v, low, high)``
with the hit's stored vector ``v``. Both need per-hit rows from Milvus, so
:class:`HitFacts` keeps them per (collection, movie): a miss costs one Milvus query for
the hits not seen before, and nothing once the catalog's hits have been seen (a new
collection is a new key, so a swapped version never mixes with the old one).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from movierec.models.reasons import pick_reason
from movierec.services.retriever.milvus import MilvusVectors
from movierec.services.retriever.records import ModelCollection

Hits = list[tuple[int, float]]


@dataclass(frozen=True)
class Reading:
    """``clip(offset + vector . v, low, high)`` of a hit's stored vector ``v``."""

    vector: np.ndarray
    offset: float
    low: float
    high: float


@dataclass(frozen=True)
class Fact:
    vector: np.ndarray
    reasons: tuple[int, ...]


@dataclass(frozen=True)
class Explained:
    """One hit with what explains it (0: nothing the user liked) and its reading."""

    movie_id: int
    score: float
    reason: int = 0
    reading: float | None = None


class HitFacts:
    """Per-movie rows of live collections, read from Milvus once (bounded, LRU)."""

    def __init__(self, store: MilvusVectors, max_entries: int = 200_000) -> None:
        self.store = store
        self.max_entries = max_entries
        self._rows: OrderedDict[tuple[str, int], Fact] = OrderedDict()

    async def get(self, live: ModelCollection, ids: Sequence[int],
                  timeout: float) -> dict[int, Fact]:
        found, missing = {}, []
        for movie_id in ids:
            fact = self._rows.get((live.collection, movie_id))
            if fact is None:
                missing.append(movie_id)
            else:
                self._rows.move_to_end((live.collection, movie_id))
                found[movie_id] = fact
        if missing:
            fields = ["vector", "reasons"] if live.reasons else ["vector"]
            for movie_id, row in (await self.store.rows(live, missing, fields, timeout)).items():
                fact = Fact(np.asarray(row["vector"], dtype=np.float32),
                            tuple(int(m) for m in row.get("reasons") or ()))
                self._remember((live.collection, movie_id), fact)
                found[movie_id] = fact
        return found

    def forget(self, collection: str, ids: Sequence[int]) -> None:
        """Drop what is kept of ``ids`` (their rows were replaced)."""
        for movie_id in ids:
            self._rows.pop((collection, movie_id), None)

    def _remember(self, key: tuple[str, int], fact: Fact) -> None:
        self._rows[key] = fact
        while len(self._rows) > self.max_entries:
            self._rows.popitem(last=False)


def explain(hits: Hits, facts: dict[int, Fact], liked: frozenset[int],
            reading: Reading | None) -> list[Explained]:
    """Each hit with its reason (among ``liked``) and reading (when asked)."""
    values: dict[int, float] = {}
    if reading is not None:
        known = [movie_id for movie_id, _ in hits if movie_id in facts]
        if known:
            dots = np.stack([facts[m].vector for m in known]) @ reading.vector
            values = dict(zip(known, np.clip(reading.offset + dots, reading.low,
                                             reading.high).tolist(), strict=True))
    return [Explained(movie_id, score,
                      pick_reason(facts[movie_id].reasons, liked)
                      if liked and movie_id in facts else 0,
                      values.get(movie_id))
            for movie_id, score in hits]
