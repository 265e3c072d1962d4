"""Searches of several query vectors, each in its own model's collection, summed.

``SearchRequest.also`` adds query parts to a search (onboarding: a scaled fusion
profile vector plus a scaled PinSage liked vector, :mod:`movierec.models.onboarding`).
Each part is searched for its :func:`~movierec.models.onboarding.candidates` best
movies under the same filters; every candidate is then scored by every part with the
movie's stored vector in that part's collection (kept beside the searches by
:class:`~movierec.services.retriever.facts.HitFacts`, or the in-memory copy), and
the sum ranks them. A movie some part's collection has no vector for is left out. The
score math is inner products only: the weights are in the parts' vectors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from movierec.models.onboarding import candidates
from movierec.services.retriever.engine import Check, SearchEngine
from movierec.services.retriever.facts import Hits
from movierec.services.retriever.milvus import Filters
from movierec.services.retriever.records import ModelCollection


@dataclass(frozen=True)
class Part:
    """One query vector and the model whose collection it is scored in."""

    model: str
    vector: np.ndarray
    check: Check | None = None


def summed(found: Sequence[tuple[dict[int, float], dict[int, np.ndarray], np.ndarray]],
           top_k: int) -> Hits:
    """The ``top_k`` candidates by summed score. ``found``: per part, (its hits' scores,
    stored vectors of the candidates it did not return, its query vector)."""
    total: dict[int, float] = {}
    for movie_id in sorted({m for hits, _, _ in found for m in hits}):
        score = 0.0
        for hits, stored, vector in found:
            if movie_id in hits:
                score += hits[movie_id]
            elif movie_id in stored:
                score += float(np.asarray(stored[movie_id], np.float32) @ vector)
            else:
                break
        else:
            total[movie_id] = score
    ranked = sorted(total.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:top_k]


async def search(engine: SearchEngine, parts: Sequence[Part], top_k: int, filters: Filters,
                 timeout: float) -> tuple[Hits, ModelCollection]:
    """The summed search of ``parts`` (the first part's collection explains the hits)."""
    depth = candidates(top_k)
    results = await asyncio.gather(*(engine.search(p.model, p.vector, depth, filters,
                                                   timeout, p.check) for p in parts))
    pool = {m for hits, _ in results for m, _ in hits}
    scores = [dict(hits) for hits, _ in results]
    missing = [[m for m in pool if m not in mine] for mine in scores]
    stored = await asyncio.gather(*(engine.stored(live, ids, timeout) for (_, live), ids
                                    in zip(results, missing, strict=True)))
    found = [(mine, kept, np.asarray(part.vector, np.float32))
             for part, mine, kept in zip(parts, scores, stored, strict=True)]
    return summed(found, top_k), results[0][1]
