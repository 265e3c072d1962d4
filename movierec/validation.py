"""Bounds on every request field, shared by the servicers.

Each check raises :class:`movierec.errors.InvalidArgument` naming the field, so a
caller always learns which value to fix.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from movierec.data.movielens import GENRES, NUM_OCCUPATIONS
from movierec.errors import InvalidArgument
from movierec.limits import MAX_AGE, MAX_GENRES, MAX_ID, MAX_LABEL, MAX_TEXT, MIN_AGE

KNOWN_GENRES = frozenset((*GENRES, "unknown"))
MIN_RATING, MAX_RATING = 1, 5   # stars of a MovieLens rating
GENDERS = ("M", "F")


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
