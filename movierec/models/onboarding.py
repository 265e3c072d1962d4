"""Onboarding: a profile and a few liked movies in one query, by score fusion.

A new user's two signals are scored by the models that own them: the fusion model
ranks the catalog for the profile (``u_p . v_p(i)``), PinSage for the liked movies
(``u_l . v_l(i)``). The two scores have unrelated scales, so each is standardized over
the catalog and the profile's counts with a weight that depends on how many liked
movies there are (``k``)::

    score(i) = z_l(i) + w(k) * z_p(i),   z_m(i) = (u_m . v_m(i) - mean_m) / std_m,
    w(k) = c * k ** -p

The means are the same for every movie, so the ranking is that of
``(u_l / std_l) . v_l(i) + (w(k) / std_p) . u_p . v_p(i)``: two scaled query vectors
whose inner products the retriever adds up (``SearchRequest.also``), each searched in
its own model's collection. ``std_m`` of a query is exact: ``sqrt(u C_m u)`` with
``C_m`` the covariance of the model's item vectors (:class:`Spread`). With no liked
movie the query is the profile's alone.

:data:`RULE` ``(c, p)`` was chosen on the user cold-start validation users
(``movierec evaluate onboarding``, docs/onboarding.md) from :data:`RULE_GRID`: the
profile's weight falls as likes arrive. Candidates: each part's :func:`candidates` best
movies, scored by every part (the served retriever and the evaluation use the same rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from movierec.models import registry

#: (c, p) of the profile's weight w(k) = c * k ** -p beside k known liked movies, chosen
#: on validation (docs/onboarding.md, ``movierec evaluate onboarding``)
RULE: tuple[float, float] = (3.0, 1.0)
#: the rules the validation compares (mean validation NDCG@10 over k and draws)
RULE_GRID = tuple((c, p) for c in (1.0, 1.5, 2.0, 3.0, 5.0) for p in (0.5, 1.0, 1.5, 2.0))
#: constant weights, tuned per k apart (an upper bound the rule is compared with)
WEIGHT_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0)
#: the models that embed the two signals (the registry's table)
PROFILE_MODEL = registry.for_input("profile").name
LIKED_MODEL = registry.for_input("liked").name


def weight(k: int, rule: tuple[float, float] | None = None) -> float:
    """The profile's weight beside ``k`` liked movies: ``c * k ** -p`` (inf: no like)."""
    c, p = RULE if rule is None else rule
    return float(c * k ** -p) if k > 0 else float("inf")


def candidates(top_k: int) -> int:
    """How many of each part's best movies are scored by every part."""
    return max(4 * top_k, 200)


@dataclass(frozen=True)
class Spread:
    """How a model's scores spread over its catalog: the covariance of its item vectors."""

    covariance: np.ndarray   # (dim, dim)

    @classmethod
    def of(cls, item_vectors: np.ndarray) -> Spread:
        vectors = np.asarray(item_vectors, np.float64)
        if len(vectors) < 2:
            return cls(np.eye(vectors.shape[1]))
        return cls(np.cov(vectors, rowvar=False).reshape(vectors.shape[1], -1))

    def std(self, query: np.ndarray) -> float:
        """Standard deviation over the catalog of ``query . v`` (never below 1e-9)."""
        q = np.asarray(query, np.float64)
        return float(np.sqrt(max(q @ self.covariance @ q, 1e-18)))


def query_parts(profile: np.ndarray, liked: np.ndarray | None, k: int, profile_spread: Spread,
                liked_spread: Spread, rule: tuple[float, float] | None = None
                ) -> dict[str, np.ndarray]:
    """The scaled query vector of each model (``{PROFILE_MODEL: ..., LIKED_MODEL: ...}``)
    whose summed inner products rank as ``z_l + w(k) z_p``; the profile's alone
    (unscaled) when there is no liked vector."""
    if liked is None or k <= 0:
        return {PROFILE_MODEL: np.asarray(profile, np.float32)}
    w = weight(k, rule)
    return {PROFILE_MODEL: (w / profile_spread.std(profile) * profile).astype(np.float32),
            LIKED_MODEL: (np.asarray(liked) / liked_spread.std(liked)).astype(np.float32)}


def blended(part_scores: list[np.ndarray], top_k: int) -> np.ndarray:
    """Rows of summed scores where a movie is among some part's :func:`candidates`
    best (``-inf`` elsewhere, and wherever a part has no vector: ``-inf`` there).
    ``part_scores``: one ``(users, movies)`` array per part, already masked."""
    total = np.sum(part_scores, axis=0)
    keep = np.zeros(total.shape, bool)
    depth = min(candidates(top_k), total.shape[1])
    rows = np.arange(total.shape[0])[:, None]
    for scores in part_scores:
        best = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        keep[rows, best] = True
    return np.where(keep & np.isfinite(total), total, -np.inf)
