"""Synthetic MovieLens at any size up to ml-25m's (25M ratings), in ml-1m's file format.

:func:`write_scale` writes ``users.dat``, ``movies.dat`` and ``ratings.dat`` (``::``
separated, latin-1, ratings grouped by user) block by block, so memory stays bounded
and 25M ratings take minutes. The curves are fitted to ml-1m (``docs/scale.md`` shows
the comparison, :mod:`movierec.data.synth_check` computes it):

* sizes: by default users and movies grow with the ratings along the power law through
  ml-1m (1.0M ratings, 6,040 users, 3,883 movies) and ml-25m (25.0M, 162,541, 62,423);
* activity: ratings per user follow a log-normal truncated at 20 (MovieLens keeps users
  with 20 or more) and capped at 60 % of the catalog (ml-1m's busiest user: 62 %), sigma
  1.05 (fitted to ml-1m's quantiles), mu solved for the requested mean, drawn at
  stratified quantiles and nudged to sum exactly to the requested ratings;
* popularity: a Zipf head with an exponential cut-off whose exponent is calibrated for
  the drawn users and catalog (:mod:`movierec.data.synth_popularity`) so the ratings' top
  1-50 % shares come out as ml-1m's; 4.6 % of the catalog is never rated (ml-1m: 177 of
  3,883); each user's movies are drawn without replacement, in the order they are rated;
* profiles, genre counts and genre frequencies follow ml-1m's marginals; a profile shifts
  a user's latent taste and a movie's genres and title words follow its latent factors
  (like :mod:`movierec.data.synthetic`), so profiles and content carry learnable signal;
* stars cut the latent ``b_user + b_movie + u.v + noise`` (popular movies a little better)
  at the points that give ml-1m's shares of 1-5 stars; timestamps are sessions (ratings
  seconds apart, pauses of days to months) inside ``first_year``-``last_year``.

The same :class:`ScaleSpec` (seed included) always writes the same bytes.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from movierec.data import synth_popularity, synth_sample
from movierec.data.movielens import AGE_BUCKETS, GENRES, NUM_OCCUPATIONS
from movierec.data.synthetic import _WORDS

ML1M = (1_000_209, 6_040, 3_883)  # ratings, users, movies
ML25M = (25_000_095, 162_541, 62_423)
MIN_PER_USER, MAX_SHARE = 20, 0.6
ACTIVITY_SIGMA = 1.05
GENDER_P = {"M": 0.7171, "F": 0.2829}
AGE_P = (0.0368, 0.1826, 0.347, 0.1975, 0.0911, 0.0821, 0.0629)  # AGE_BUCKETS order
OCCUPATION_P = (0.1177, 0.0874, 0.0442, 0.0286, 0.1257, 0.0185, 0.0391, 0.1124, 0.0028,
                0.0152, 0.0323, 0.0214, 0.0642, 0.0235, 0.05, 0.0238, 0.0399, 0.0831,
                0.0116, 0.0119, 0.0465)
GENRE_COUNT_P = (0.5215, 0.3405, 0.1084, 0.0258, 0.0036, 0.0002)  # 1..6 genres
GENRE_SHARE = (0.1295, 0.0729, 0.027, 0.0646, 0.309, 0.0543, 0.0327, 0.4128, 0.0175, 0.0113,
               0.0883, 0.0294, 0.0273, 0.1213, 0.0711, 0.1267, 0.0368, 0.0175)  # GENRES order
USER_BIAS, MOVIE_BIAS, INTERACTION, NOISE = 0.4, 0.35, 0.7, 0.6
#: ml-1m's share of ratings at or below 1, 2, 3 and 4 stars: the latent's cut points.
STARS_AT_MOST = (0.0562, 0.1637, 0.4248, 0.7737)
BLOCK_RATINGS = 250_000


@dataclass(frozen=True)
class ScaleSpec:
    """What to write: exactly ``ratings`` ratings by ``users`` users over ``movies`` movies."""

    ratings: int
    users: int
    movies: int
    seed: int = 0
    dim: int = 8
    first_year: int = 1996
    last_year: int = 2019

    @property
    def max_per_user(self) -> int:
        """The most ratings one user may have: MAX_SHARE of the catalog."""
        return int(MAX_SHARE * self.movies)


@dataclass(frozen=True)
class ScaleReport:
    """What :func:`write_scale` wrote and what it cost."""

    directory: Path
    ratings: int
    users: int
    movies: int
    rated_movies: int
    popularity_exponent: float
    seconds: float
    peak_rss_mb: float


def _grow(column: int, ratings: int) -> float:
    """ml-1m's users (column 1) or movies (2) grown to ``ratings`` along the power law
    through ml-1m and ml-25m."""
    exponent = math.log(ML25M[column] / ML1M[column]) / math.log(ML25M[0] / ML1M[0])
    return ML1M[column] * (ratings / ML1M[0]) ** exponent


def plan(ratings: int, users: int | None = None, movies: int | None = None,
         **options) -> ScaleSpec:
    """A spec for ``ratings`` ratings; users and movies derived from it unless given.

    A derived catalog is never smaller, relative to the mean ratings per user, than
    ml-1m's (3,883 movies for 165.6 ratings per user): below 1M ratings it stays near
    ml-1m's size, else users would rate so much of it that no curve could look like ml-1m.
    """
    users = users or max(1, round(_grow(1, ratings)))
    floor = ML1M[2] * (ratings / users) / (ML1M[0] / ML1M[1])
    movies = movies or max(round(_grow(2, ratings)), round(floor))
    spec = ScaleSpec(ratings, users, movies, **options)
    if spec.max_per_user < MIN_PER_USER or spec.ratings < MIN_PER_USER * spec.users:
        raise ValueError(f"{ratings:,} ratings cannot give {users:,} users {MIN_PER_USER}+ "
                         f"ratings each over {movies:,} movies")
    if spec.ratings > spec.max_per_user * spec.users:
        raise ValueError(f"{ratings:,} ratings need more than {users:,} users x "
                         f"{spec.max_per_user:,} ({MAX_SHARE:.0%} of {movies:,} movies)")
    return spec


def write_scale(spec: ScaleSpec, directory: Path) -> ScaleReport:
    """Write ``spec``'s data set into ``directory`` as ml-1m files; time and peak RSS too."""
    start = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(5)]
    users = _profiles(rngs[0], spec.users)
    user_f, user_b = _user_taste(rngs[1], users, spec.dim)
    _write_lines(directory / "users.dat", map("{}::{}::{}::{}::{}".format, *users.values()))
    movie_f = rngs[2].normal(0.0, 0.6, (spec.movies, spec.dim))
    titles, genres, years = _movies(rngs[2], movie_f, spec)
    _write_lines(directory / "movies.dat", map("{}::{} ({})::{}".format, range(1, spec.movies + 1),
                                               titles, years.tolist(), genres))
    counts = _activity(rngs[4], spec)
    exponent = synth_popularity.calibrate(counts, synth_popularity.rated_movies(spec.movies))
    log_w = synth_popularity.popularity(rngs[3], spec.movies, exponent)
    movie_b = _movie_bias(rngs[3], log_w)
    taste = (user_f, user_b, movie_f, movie_b)
    rated = _write_ratings(directory / "ratings.dat", spec, counts, log_w, taste)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return ScaleReport(directory, int(counts.sum()), spec.users, spec.movies, rated, exponent,
                       time.perf_counter() - start, peak)


def _write_lines(path: Path, lines) -> None:
    """Write text lines, newline-terminated, latin-1 (MovieLens' encoding)."""
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def _profiles(rng: np.random.Generator, n: int) -> dict[str, list]:
    """ml-1m's users.dat columns with ml-1m's marginals (zip codes uniform)."""
    return {
        "user_id": list(range(1, n + 1)),
        "gender": rng.choice(list(GENDER_P), n, p=_norm(GENDER_P.values())).tolist(),
        "age": rng.choice(list(AGE_BUCKETS), n, p=_norm(AGE_P)).tolist(),
        "occupation": rng.choice(NUM_OCCUPATIONS, n, p=_norm(OCCUPATION_P)).tolist(),
        "zip": [f"{z:05d}" for z in rng.integers(0, 100_000, n).tolist()],
    }


def _norm(p) -> np.ndarray:
    p = np.asarray(list(p), dtype=float)
    return p / p.sum()


def _user_taste(rng: np.random.Generator, users: dict[str, list],
                dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Latent factors = gender + age + occupation shifts + a personal part; and a bias."""
    gender = np.asarray([g == "F" for g in users["gender"]], dtype=np.int64)
    age = np.searchsorted(list(AGE_BUCKETS), users["age"])
    by_gender, by_age = rng.normal(0, 0.5, (2, dim)), rng.normal(0, 0.5, (len(AGE_BUCKETS), dim))
    by_job = rng.normal(0, 0.4, (NUM_OCCUPATIONS, dim))
    n = len(gender)
    factors = (by_gender[gender] + by_age[age] + by_job[np.asarray(users["occupation"])]
               + rng.normal(0, 0.3, (n, dim)))
    return factors, rng.normal(0.0, USER_BIAS, n)


def _movies(rng: np.random.Generator, factors: np.ndarray,
            spec: ScaleSpec) -> tuple[list[str], list[str], np.ndarray]:
    """Titles (``Words id``), genres (``A|B``) and release years of every movie."""
    n, dim = factors.shape
    genre_rank = np.argsort(-_genre_keys(rng, factors), axis=1)
    how_many = rng.choice(len(GENRE_COUNT_P), n, p=_norm(GENRE_COUNT_P)) + 1
    word_rank = np.argsort(-(factors @ rng.normal(0, 1, (len(_WORDS), dim)).T), axis=1)
    n_words = rng.integers(1, 4, n)
    # Released before the ratings start, as in ml-1m (movies up to 2000, ratings from
    # 2000): a median 6 years before, so no movie is rated before the year it came out.
    age = np.floor(np.exp(rng.normal(1.95, 1.15, n))) - 1
    years = np.clip(spec.first_year - age, 1915, spec.first_year).astype(int)
    genres = ["|".join(GENRES[j] for j in sorted(genre_rank[i, :how_many[i]])) for i in range(n)]
    titles = [" ".join(_WORDS[w].title() for w in word_rank[i, :n_words[i]]) + f" {i + 1}"
              for i in range(n)]
    return titles, genres, years


def _genre_keys(rng: np.random.Generator, factors: np.ndarray) -> np.ndarray:
    """Gumbel keys whose top k are k genres drawn with odds share^1.3 * exp(affinity):
    ml-1m's genre frequencies, each movie leaning to the genres its factors point at."""
    affinity = factors @ rng.normal(0, 1, (len(GENRES), factors.shape[1])).T
    affinity /= affinity.std() or 1.0
    return affinity + 1.3 * np.log(GENRE_SHARE) + rng.gumbel(size=affinity.shape)


def _movie_bias(rng: np.random.Generator, log_w: np.ndarray) -> np.ndarray:
    """Popular movies a little better rated (a quarter star per standard deviation)."""
    finite = np.isfinite(log_w)
    z = np.zeros(len(log_w))
    z[finite] = (log_w[finite] - log_w[finite].mean()) / (log_w[finite].std() or 1.0)
    return 0.25 * z + rng.normal(0.0, MOVIE_BIAS, len(log_w))


def _activity(rng: np.random.Generator, spec: ScaleSpec) -> np.ndarray:
    """Ratings per user: a log-normal truncated below 20 and capped, with the requested
    mean, drawn at stratified quantiles (one per 1/users slice, shuffled) so the curve
    holds even for few users; then nudged to sum exactly to ``spec.ratings``."""
    low, cap = MIN_PER_USER, spec.max_per_user
    mu = _solve_mu(spec.ratings / spec.users + 0.5, ACTIVITY_SIGMA, low, cap)
    dist = NormalDist(mu, ACTIVITY_SIGMA)
    p0 = dist.cdf(math.log(low))
    strata = (rng.permutation(spec.users) + rng.random(spec.users)) / spec.users
    p = np.clip(p0 + (1 - p0) * strata, 1e-15, 1 - 1e-15)
    z = np.fromiter((dist.inv_cdf(x) for x in p.tolist()), float, spec.users)
    counts = np.clip(np.floor(np.exp(z)), low, cap).astype(np.int64)
    return _fit_total(rng, counts, spec.ratings, low, cap)


def _solve_mu(mean: float, sigma: float, low: float, cap: float) -> float:
    """The mu whose log-normal, truncated below ``low`` and capped at ``cap``, has this
    mean (bisection on the closed form)."""
    std, a, b = NormalDist(), math.log(low), math.log(cap)

    def capped_mean(mu: float) -> float:
        kept = max(std.cdf((mu - a) / sigma), 1e-300)
        body = math.exp(mu + sigma**2 / 2) * (std.cdf((b - mu - sigma**2) / sigma)
                                              - std.cdf((a - mu - sigma**2) / sigma))
        return (body + cap * std.cdf((mu - b) / sigma)) / kept

    lo, hi = a - 12 * sigma, b + 12 * sigma
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if capped_mean(mid) < mean else (lo, mid)
    return (lo + hi) / 2


def _fit_total(rng: np.random.Generator, counts: np.ndarray, total: int, low: int,
               cap: int) -> np.ndarray:
    """Scale the counts above ``low`` so they sum to ``total``, then hand out the rest."""
    excess = counts - low
    target = total - low * len(counts)
    excess = np.minimum(np.floor(excess * (target / max(excess.sum(), 1))), cap - low)
    excess = excess.astype(np.int64)
    while (left := target - int(excess.sum())) > 0:
        room = np.flatnonzero(excess < cap - low)
        weight = _norm(excess[room] + 1.0)
        excess[rng.choice(room, min(left, room.size), replace=False, p=weight)] += 1
    return excess + low


def _write_ratings(path: Path, spec: ScaleSpec, counts: np.ndarray, log_w: np.ndarray,
                   taste: tuple[np.ndarray, ...]) -> int:
    """Write ratings.dat block by block (about BLOCK_RATINGS each); return movies rated."""
    user_f, user_b, movie_f, movie_b = taste
    cdf = np.cumsum(np.exp(log_w))
    cdf /= cdf[-1]
    block = max(1, BLOCK_RATINGS * spec.users // spec.ratings)
    starts = range(0, spec.users, block)
    seeds = np.random.SeedSequence([spec.seed, 1]).spawn(len(starts))
    span = (_epoch(spec.first_year), _epoch(spec.last_year + 1) - 1)
    scale = INTERACTION / math.sqrt(spec.dim * 0.75 * 0.36)  # u.v's standard deviation
    cuts = None
    seen = np.zeros(spec.movies, dtype=bool)
    with path.open("wb") as out:
        for lo, seed in zip(starts, seeds, strict=True):
            rng = np.random.default_rng(seed)
            k = counts[lo:lo + block]
            user, movie = synth_sample.draw_movies(rng, k, log_w, cdf)
            user += lo
            when = synth_sample.timestamps(rng, k, span)
            base = user_b[user] + movie_b[movie]
            raw = synth_sample.latent(rng, base, user_f[user], movie_f[movie], NOISE, scale)
            if cuts is None:  # the first block's quantiles: ml-1m's shares of 1-5 stars
                cuts = np.quantile(raw, STARS_AT_MOST)
            star = 1 + np.searchsorted(cuts, raw)
            seen[movie] = True
            lines = map("{}::{}::{}::{}".format, (user + 1).tolist(), (movie + 1).tolist(),
                        star.tolist(), when.tolist())
            out.write(("\n".join(lines) + "\n").encode("latin-1"))
    return int(seen.sum())


def _epoch(year: int) -> int:
    """Seconds since 1970 at the start of ``year`` (UTC)."""
    return int(pd.Timestamp(year=year, month=1, day=1, tz="UTC").timestamp())
