"""The per-block sampling of :mod:`movierec.data.synth_scale`: which movies, when, how rated.

Everything here works on one block of consecutive users at a time, vectorised, so that a
25M-rating data set is drawn in bounded memory. Arrays are 0-based indexes (user ``i`` of
the block, movie ``j`` of the catalog); the writer adds 1 for the file ids.
"""

from __future__ import annotations

import numpy as np

#: A user who rates more than this share of the catalog is drawn exactly (Gumbel top-k,
#: O(catalog) each); the others by repeated draws with replacement, duplicates removed.
HEAVY_SHARE = 0.05
#: Within a session, seconds between two ratings: 1 + exponential (ml-1m: median gap 0 s,
#: 75 % <= 30 s, 90 % <= 67 s); between sessions, a log-normal pause (median about a week).
IN_SESSION_MEAN_S = 30.0
SESSION_GAP_LOG_MEDIAN, SESSION_GAP_LOG_SIGMA = np.log(7 * 86_400), 1.5


def draw_movies(rng: np.random.Generator, counts: np.ndarray, log_w: np.ndarray,
                cdf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each user ``i``, ``counts[i]`` distinct movies drawn one after another without
    replacement with weights ``exp(log_w)`` (``cdf`` is their normalised cumulative sum).

    Returns ``(user, movie)`` sorted by user, each user's movies in draw order (the order
    they are rated in).
    """
    heavy = counts > max(1, int(HEAVY_SHARE * len(log_w)))
    users_l, movies_l = _draw_light(rng, np.where(heavy, 0, counts), cdf)
    parts_u, parts_m = [users_l], [movies_l]
    for i in np.flatnonzero(heavy):
        parts_m.append(_draw_exact(rng, int(counts[i]), log_w))
        parts_u.append(np.full(int(counts[i]), i, dtype=np.int64))
    user, movie = np.concatenate(parts_u), np.concatenate(parts_m)
    order = np.argsort(user, kind="stable")
    return user[order], movie[order]


def _draw_exact(rng: np.random.Generator, k: int, log_w: np.ndarray) -> np.ndarray:
    """Successive sampling without replacement via Gumbel keys: the k largest, in order."""
    keys = log_w + rng.gumbel(size=len(log_w))
    top = np.argpartition(-keys, k - 1)[:k]
    return top[np.argsort(-keys[top], kind="stable")].astype(np.int64)


def _draw_light(rng: np.random.Generator, counts: np.ndarray,
                cdf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw with replacement, drop repeats (keeping the first), draw again for the deficit."""
    n_movies = np.int64(len(cdf))
    keys = np.empty(0, dtype=np.int64)
    have = np.zeros(len(counts), dtype=np.int64)
    while (pending := np.flatnonzero(have < counts)).size:
        extra = np.ceil((counts[pending] - have[pending]) * 1.1).astype(np.int64) + 1
        owner = np.repeat(pending.astype(np.int64), extra)
        movie = np.minimum(np.searchsorted(cdf, rng.random(owner.size), side="right"),
                           n_movies - 1)
        keys = _first_k(np.concatenate([keys, owner * n_movies + movie]), counts, n_movies)
        have = np.bincount(keys // n_movies, minlength=len(counts))
    return keys // n_movies, keys % n_movies


def _first_k(keys: np.ndarray, counts: np.ndarray, n_movies: np.int64) -> np.ndarray:
    """Distinct ``keys`` (user * n_movies + movie) in first-drawn order, grouped by user,
    at most ``counts[user]`` each."""
    _, first = np.unique(keys, return_index=True)
    keys = keys[np.sort(first)]
    keys = keys[np.argsort(keys // n_movies, kind="stable")]
    owner = keys // n_movies
    starts = np.searchsorted(owner, np.arange(len(counts)))
    rank = np.arange(len(keys)) - starts[owner]
    return keys[rank < counts[owner]]


def timestamps(rng: np.random.Generator, counts: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """Strictly increasing seconds per user: bursts of ratings seconds apart, separated by
    pauses of days to months, the whole history placed at random inside ``span``."""
    n_users, total = len(counts), int(counts.sum())
    owner = np.repeat(np.arange(n_users), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # Most users rate in one sitting; a few come back often (Beta(0.3, 15): mean 2 %).
    p_break = rng.beta(0.3, 15.0, n_users)[owner]
    small = 1.0 + np.floor(rng.exponential(IN_SESSION_MEAN_S, total))
    pause = np.exp(rng.normal(SESSION_GAP_LOG_MEDIAN, SESSION_GAP_LOG_SIGMA, total))
    is_break = rng.random(total) < p_break
    is_break[starts] = False
    first, last = span
    room = (last - first) * 0.9
    small_sum = np.bincount(owner, small, n_users)
    pause_sum = np.bincount(owner, np.where(is_break, pause, 0.0), n_users)
    shrink = np.minimum(1.0, np.maximum(room - small_sum, 0.0) / np.maximum(pause_sum, 1.0))
    gaps = np.where(is_break, np.maximum(1.0, np.floor(pause * shrink[owner])), small)
    gaps[starts] = 0.0
    offset = np.cumsum(gaps)
    offset -= np.repeat(offset[starts], counts)
    duration = offset[np.cumsum(counts) - 1]
    begin = first + np.floor(rng.random(n_users) * np.maximum(last - first - duration, 0.0))
    return (begin[owner] + offset).astype(np.int64)


def latent(rng: np.random.Generator, base: np.ndarray, user_f: np.ndarray,
           movie_f: np.ndarray, noise: float, interaction: float) -> np.ndarray:
    """The latent behind each rating: ``base + interaction * u.v + noise`` (``base`` holds
    both biases, one value per rating); stars cut it at fixed points (an ordinal model)."""
    affinity = np.einsum("ij,ij->i", user_f, movie_f)
    return base + interaction * affinity + rng.normal(0.0, noise, len(base))
