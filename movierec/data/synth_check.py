"""Does a data set's popularity and activity look like ml-1m's? (``movierec data synth-check``)

:func:`curves` reads only the user and movie columns of ``ratings.dat`` (or ``u.data``),
in chunks, so a 25M-rating file is summarised in bounded memory. It measures:

* popularity: the share of all ratings held by the top 1, 5, 10, 20 and 50 % of rated
  movies, and the Zipf exponent: minus the slope of log ratings over log popularity rank,
  fitted on 50 log-spaced ranks from the top 1 % to the top 50 % of rated movies. The
  window is a share of the catalog, so the number compares across sizes (over all ranks
  it would not: neither the very head nor the cut-off of the tail follows a power law,
  and a larger catalog puts more log-spaced ranks in the head);
* activity: quantiles of ratings per user and the log-normal fit (mean and standard
  deviation of log ratings per user).

:func:`compare` lines two summaries up with a tolerance per row (absolute for shares and
log-normal parameters, relative for counts per user) and :func:`table` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.errors import DataError

TOP_PERCENTS = (1, 5, 10, 20, 50)
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
SHARE_TOLERANCE, ZIPF_TOLERANCE, LOG_TOLERANCE, COUNT_TOLERANCE = 0.05, 0.1, 0.15, 0.25


@dataclass(frozen=True)
class Row:
    """One compared number: the data set's, the reference's, and whether they agree."""

    metric: str
    value: float
    reference: float
    ok: bool
    judged: bool = True


def _counts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Ratings per user and per movie (ids as indexes), read 2M lines at a time."""
    if (path / "ratings.dat").is_file():
        source, sep, cols = path / "ratings.dat", ":", [0, 2]
    elif (path / "u.data").is_file():
        source, sep, cols = path / "u.data", "\t", [0, 1]
    else:
        raise DataError(f"no ratings.dat or u.data in {path}")
    users, movies = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for chunk in pd.read_csv(source, sep=sep, header=None, usecols=cols, dtype=np.int64,
                             chunksize=2_000_000, encoding="latin-1"):
        users = _add(users, np.bincount(chunk[cols[0]].to_numpy()))
        movies = _add(movies, np.bincount(chunk[cols[1]].to_numpy()))
    return users[users > 0], movies[movies > 0]


def _add(total: np.ndarray, more: np.ndarray) -> np.ndarray:
    if len(more) > len(total):
        total, more = more, total
    total = total.copy()
    total[:len(more)] += more
    return total


def curves(path: Path) -> dict[str, float]:
    """The popularity and activity numbers of the data set in directory ``path``."""
    per_user, per_movie = _counts(path)
    out = {"ratings": float(per_user.sum()), "users": float(len(per_user)),
           "rated movies": float(len(per_movie))}
    ranked = np.sort(per_movie)[::-1]
    cumulative = np.cumsum(ranked) / ranked.sum()
    for pct in TOP_PERCENTS:
        out[f"top {pct}% movies' share"] = float(cumulative[max(1, round(len(ranked) * pct
                                                                          / 100)) - 1])
    out["zipf exponent"] = zipf_exponent(ranked)
    for q, v in zip(QUANTILES, np.quantile(per_user, QUANTILES), strict=True):
        out[f"ratings/user q{round(q * 100)}"] = float(v)
    out["ratings/user mean"] = float(per_user.mean())
    logs = np.log(per_user)
    out["log-normal mu"], out["log-normal sigma"] = float(logs.mean()), float(logs.std())
    return out


def zipf_exponent(ranked: np.ndarray, window: tuple[float, float] = (0.01, 0.5),
                  points: int = 50) -> float:
    """Minus the least-squares slope of log(count) on log(rank) at log-spaced ranks inside
    ``window`` (shares of the catalog) of the descending counts ``ranked``."""
    first, last = (max(1.0, share * len(ranked)) for share in window)
    ranks = np.unique(np.round(np.geomspace(first, last, points)).astype(int))
    if len(ranks) < 2:
        return 0.0
    slope, _ = np.polyfit(np.log(ranks), np.log(ranked[ranks - 1]), 1)
    return float(-slope)


#: Sizes are the caller's choice, and the least and most ratings per user grow with the
#: number of users (ml-25m's busiest user has 32k ratings): shown, not judged.
UNJUDGED = ("ratings", "users", "rated movies", "ratings/user q0", "ratings/user q100")


def _ok(metric: str, value: float, reference: float) -> bool:
    """Whether ``value`` is within the metric's tolerance of ``reference``."""
    if metric in UNJUDGED:
        return True
    if "share" in metric:
        return abs(value - reference) <= SHARE_TOLERANCE
    if metric == "zipf exponent":
        return abs(value - reference) <= ZIPF_TOLERANCE
    if metric.startswith("log-normal"):
        return abs(value - reference) <= LOG_TOLERANCE
    return abs(value - reference) <= COUNT_TOLERANCE * max(abs(reference), 1.0)


def compare(summary: dict[str, float], reference: dict[str, float]) -> list[Row]:
    """Every metric of ``summary`` against ``reference``'s."""
    return [Row(m, v, reference[m], _ok(m, v, reference[m]), m not in UNJUDGED)
            for m, v in summary.items()]


def table(rows: list[Row], names: tuple[str, str]) -> str:
    """A fixed-width text table (a markdown table with ``|``s) of the compared rows."""
    lines = [f"| {'metric':28s} | {names[0]:>14s} | {names[1]:>14s} | within tolerance |",
             f"|{'-' * 30}|{'-' * 15}:|{'-' * 15}:|:{'-' * 16}:|"]
    for row in rows:
        verdict = ("yes" if row.ok else "NO") if row.judged else "(not judged)"
        lines.append(f"| {row.metric:28s} | {_fmt(row.value):>14s} | {_fmt(row.reference):>14s} "
                     f"| {verdict:^16s} |")
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() and abs(x) >= 1 else f"{x:.3f}"
