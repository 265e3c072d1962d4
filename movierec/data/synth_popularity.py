"""Movie popularity for :mod:`movierec.data.synth_scale`, calibrated to ml-1m's curve.

A movie of popularity rank ``r`` among ``n`` rated movies has weight
``r^-s * exp(-r / (CUTOFF * n))``: a Zipf head with an exponential cut-off, the shape of
ml-1m's rank-frequency curve. Users draw movies without replacement, so a busy user who
has taken the head must go down the tail: the curve of *ratings* comes out flatter than
the weights, the more so the larger each user's share of the catalog. :func:`calibrate`
therefore picks the exponent ``s`` for the actual users and catalog, so that the expected
share of ratings held by the top 1, 5, 10, 20 and 50 % of movies is ml-1m's at any size.

The expectation uses Rosén's approximation of successive sampling: a user who draws ``k``
movies includes movie ``j`` with probability ``1 - exp(-lambda_k * w_j)``, ``lambda_k``
solving ``sum_j (1 - exp(-lambda_k * w_j)) = k``. Users are pooled into 64 groups of
similar ``k`` and movies into 1,024 groups of neighbouring ranks, so a calibration takes
well under a second even for ml-25m's 162k users and 62k movies.
"""

from __future__ import annotations

import math

import numpy as np

#: ml-1m: the share of all ratings held by the top 1, 5, 10, 20 and 50 % of rated movies.
ML1M_TOP_SHARES = {1: 0.0873, 5: 0.2828, 10: 0.4445, 20: 0.6516, 50: 0.9237}
#: The cut-off, as a share of the rated catalog (fitted to ml-1m with the exponent).
CUTOFF = 0.25
#: ml-1m lists 3,883 movies of which 177 have no rating.
UNRATED_SHARE = 177 / 3_883
USER_GROUPS, MOVIE_GROUPS = 64, 1_024


def rated_movies(n_movies: int) -> int:
    """How many of ``n_movies`` get a positive weight (the rest are never rated)."""
    return max(1, n_movies - round(UNRATED_SHARE * n_movies))


def log_weights(exponent: float, rated: int) -> np.ndarray:
    """Log weights of popularity ranks 1..``rated`` (unnormalised)."""
    rank = np.arange(1, rated + 1, dtype=float)
    return -exponent * np.log(rank) - rank / (CUTOFF * rated)


def expected_shares(exponent: float, counts: np.ndarray, rated: int) -> np.ndarray:
    """Expected shares of ratings held by the top ML1M_TOP_SHARES percents of movies
    (by weight rank) when users with ``counts`` ratings draw without replacement."""
    log_w = log_weights(exponent, rated)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    edges = np.unique(np.linspace(0, rated, min(rated, MOVIE_GROUPS) + 1).round().astype(int))
    size = np.diff(edges).astype(float)
    group_w = np.add.reduceat(w, edges[:-1]) / size
    parts = np.array_split(np.sort(counts), min(USER_GROUPS, len(counts)))
    users = np.asarray([len(part) for part in parts], dtype=float)
    lam = _solve_lambda(np.asarray([part.mean() for part in parts]), group_w, size)
    taken = 1.0 - np.exp(-lam[:, None] * group_w[None, :])
    per_movie = users @ taken
    cumulative = np.concatenate([[0.0], np.cumsum(per_movie * size)])
    tops = [max(1, round(rated * pct / 100)) for pct in ML1M_TOP_SHARES]
    return np.interp(tops, edges, cumulative) / cumulative[-1]


def _solve_lambda(ks: np.ndarray, w: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Per ``k``: the ``lambda`` with ``sum size * (1 - exp(-lambda * w)) = k`` (bisection
    on log lambda; ``lambda >= k`` since the weights sum to 1)."""
    lo, hi = np.log(ks), np.log(ks) + 40.0
    for _ in range(60):
        mid = (lo + hi) / 2
        got = (size[None, :] * -np.expm1(-np.exp(mid)[:, None] * w[None, :])).sum(axis=1)
        lo, hi = np.where(got < ks, mid, lo), np.where(got < ks, hi, mid)
    return np.exp((lo + hi) / 2)


def calibrate(counts: np.ndarray, rated: int) -> float:
    """The exponent whose expected top shares are closest to ml-1m's (golden section)."""
    target = np.asarray(list(ML1M_TOP_SHARES.values()))

    def loss(exponent: float) -> float:
        return float(((expected_shares(exponent, counts, rated) - target) ** 2).sum())

    lo, hi, ratio = 0.0, 2.0, (math.sqrt(5) - 1) / 2
    for _ in range(25):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        lo, hi = (lo, b) if loss(a) < loss(b) else (a, hi)
    return (lo + hi) / 2


def popularity(rng: np.random.Generator, n_movies: int, exponent: float) -> np.ndarray:
    """Log weights per movie index (a random order of movies); -inf for the never rated."""
    rated = rated_movies(n_movies)
    log_w = np.full(n_movies, -np.inf)
    log_w[:rated] = log_weights(exponent, rated)
    return log_w[rng.permutation(n_movies)]
