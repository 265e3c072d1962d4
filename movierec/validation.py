"""Bounds on every request field, shared by the servicers.

Each check raises :class:`movierec.errors.InvalidArgument` naming the field, so a
caller always learns which value to fix.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from movierec.data.movielens import GENRES, NUM_OCCUPATIONS, age_bucket
from movierec.errors import InvalidArgument
from movierec.limits import (
    MAX_AGE,
    MAX_GENRES,
    MAX_ID,
    MAX_LABEL,
    MAX_TEXT,
    MAX_TITLE,
    MAX_UPSERT_MOVIES,
    MIN_AGE,
)

KNOWN_GENRES = frozenset((*GENRES, "unknown"))
MIN_RATING, MAX_RATING = 1, 5   # stars of a MovieLens rating
GENDERS = ("M", "F")
MIN_YEAR, MAX_YEAR = 1800, 2200  # a movie's year (the catalog schema's CHECK)


def limit(field: str, value: int, default: int, maximum: int) -> int:
    """``value`` if in 1..maximum, ``default`` if 0; otherwise InvalidArgument."""
    if value == 0:
        return default
    if value < 0 or value > maximum:
        raise InvalidArgument(field, f"must be between 1 and {maximum}, got {value}")
    return value


def positive_id(field: str, value: int) -> int:
    if value <= 0 or value > MAX_ID:
        raise InvalidArgument(field, f"must be between 1 and {MAX_ID}, got {value}")
    return value


def rating_problem(value: float) -> str:
    """The one message of a rating outside 1-5 (for checks over arrays, too)."""
    return f"must be between {MIN_RATING} and {MAX_RATING}, got {value:g}"


def rating(field: str, value: int) -> int:
    """A rating of 1 to 5 stars."""
    if not MIN_RATING <= value <= MAX_RATING:
        raise InvalidArgument(field, rating_problem(value))
    return value


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def profile(field: str, age: Any, gender: Any, occupation: Any, user_id: Any = None) -> None:
    """The profile rules (age in years, gender, MovieLens occupation id, an optional user
    id), for a request's ``field`` ("profile": "profile.age", ...) or a bare profile
    (""); each value must be an integer where one is expected."""
    prefix = f"{field}." if field else ""
    if not _integer(age) or not MIN_AGE <= age <= MAX_AGE:
        raise InvalidArgument(f"{prefix}age", f"must be {MIN_AGE}-{MAX_AGE} years, got {age!r}")
    if gender not in GENDERS:
        raise InvalidArgument(f"{prefix}gender", f"must be 'M' or 'F', got {gender!r}")
    if not _integer(occupation) or not 0 <= occupation < NUM_OCCUPATIONS:
        raise InvalidArgument(f"{prefix}occupation",
                              f"must be 0-{NUM_OCCUPATIONS - 1}, got {occupation!r}")
    if user_id is not None and not _integer(user_id):
        raise InvalidArgument(f"{prefix}user_id", f"must be an integer, got {user_id!r}")
    if user_id is not None:
        positive_id(f"{prefix}user_id", user_id)


def id_list(field: str, values: Sequence[int], maximum: int, *, allow_empty: bool = True,
            unique: bool = False) -> list[int]:
    """Ids, each positive; at most ``maximum`` of them; order kept."""
    ids = list(values)
    if not ids and not allow_empty:
        raise InvalidArgument(field, "must not be empty")
    if len(ids) > maximum:
        raise InvalidArgument(field, f"at most {maximum} ids, got {len(ids)}")
    for value in ids:
        positive_id(field, value)
    if unique and len(set(ids)) != len(ids):
        raise InvalidArgument(field, "must not repeat an id")
    return ids


def text(field: str, value: str, maximum: int = MAX_TEXT, *, required: bool = False) -> str:
    """Stripped text of at most ``maximum`` characters without NUL bytes."""
    stripped = value.strip()
    if required and not stripped:
        raise InvalidArgument(field, "must not be empty")
    if len(stripped) > maximum:
        raise InvalidArgument(field, f"at most {maximum} characters, got {len(stripped)}")
    if "\x00" in stripped:
        raise InvalidArgument(field, "must not contain NUL characters")
    return stripped


def text_list(field: str, values: Sequence[str], maximum: int = MAX_GENRES,
              each: int = MAX_LABEL) -> list[str]:
    if len(values) > maximum:
        raise InvalidArgument(field, f"at most {maximum} values, got {len(values)}")
    return [text(field, v, each, required=True) for v in values]


def genres(field: str, values: Sequence[str]) -> tuple[str, ...]:
    """Distinct MovieLens genre names, sorted; an unknown name is INVALID_ARGUMENT."""
    names = text_list(field, values)
    unknown = [n for n in names if n not in KNOWN_GENRES]
    if unknown:
        raise InvalidArgument(field, f"unknown genre {unknown[0][:40]!r}; known: "
                                     f"{', '.join(GENRES)}")
    return tuple(sorted(set(names)))


def year_range(field: str, low: int, high: int) -> tuple[int | None, int | None]:
    """(min, max) with 0 meaning open; InvalidArgument if reversed or absurd."""
    for value in (low, high):
        if value and not 1800 <= value <= 2200:
            raise InvalidArgument(field, f"years must be between 1800 and 2200, got {value}")
    if low and high and low > high:
        raise InvalidArgument(field, f"min_year {low} is after max_year {high}")
    return (low or None, high or None)


def weights(field: str, values: Sequence[float], count: int) -> list[float] | None:
    """None when empty; else one finite, non-negative weight per item, not all zero."""
    if not values:
        return None
    if len(values) != count:
        raise InvalidArgument(field, f"give one weight per movie id ({count}) or none")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise InvalidArgument(field, "weights must be finite and non-negative")
    if not any(v > 0 for v in values):
        raise InvalidArgument(field, "at least one weight must be positive")
    return list(values)


def finite_vector(field: str, values: Sequence[float], dim: int | None = None) -> list[float]:
    vector = list(values)
    if not vector:
        raise InvalidArgument(field, "must not be empty")
    if dim is not None and len(vector) != dim:
        raise InvalidArgument(field, f"must have {dim} dimensions, got {len(vector)}")
    if not all(math.isfinite(v) for v in vector):
        raise InvalidArgument(field, "must contain only finite numbers")
    return vector


def count(field: str, size: int, maximum: int) -> int:
    """A list's length: 1..maximum, else InvalidArgument."""
    if size == 0:
        raise InvalidArgument(field, "must not be empty")
    if size > maximum:
        raise InvalidArgument(field, f"at most {maximum} values, got {size}")
    return size


def year(field: str, value: int) -> int | None:
    """A movie's year: None for 0 (unknown), else MIN_YEAR..MAX_YEAR."""
    if value == 0:
        return None
    if not MIN_YEAR <= value <= MAX_YEAR:
        raise InvalidArgument(field, f"must be 0 (unknown) or {MIN_YEAR}-{MAX_YEAR}, got {value}")
    return value


def movie(field: str, movie_id: int, title: str, year_: int, genre_names: Sequence[str]
          ) -> tuple[int | None, str, int | None, tuple[str, ...]]:
    """A movie to write, ``(id or None, title, year or None, genres)``: id 0 means none
    (the catalog matches or assigns it), the title is required, the year 0 or
    MIN_YEAR-MAX_YEAR and the genres known genre names (:func:`genres`)."""
    return ((positive_id(f"{field}.movie_id", movie_id) if movie_id else None),
            text(f"{field}.title", title, MAX_TITLE, required=True),
            year(f"{field}.year", year_), genres(f"{field}.genres", genre_names))


def movies(field: str, items: Sequence[Any], maximum: int = MAX_UPSERT_MOVIES
           ) -> list[tuple[int | None, str, int | None, tuple[str, ...]]]:
    """A batch of movies to write (1..maximum of them, each :func:`movie`'s rules, named
    ``field[i]``); the first bad value is InvalidArgument, so nothing is written."""
    count(field, len(items), maximum)
    return [movie(f"{field}[{i}]", m.movie_id, m.title, m.year, m.genres)
            for i, m in enumerate(items)]


def user_profile(user_id: int, age: Any, gender: Any, occupation: Any
                 ) -> tuple[int | None, int, str, int]:
    """A profile to write, ``(user id or None, age bucket code, gender, occupation)``:
    :func:`profile`'s rules, the id 0 meaning none (a sign-up), the age in years stored as
    its ml-1m bucket code."""
    profile("", age, gender, occupation, user_id or None)
    return (user_id or None), age_bucket(age), gender, occupation
