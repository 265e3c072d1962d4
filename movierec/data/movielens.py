"""MovieLens parsing into one schema shared by ml-1m, ml-100k and synthetic data.

Every data set becomes a :class:`MovieLens` with three pandas frames:

* ``ratings``: ``user_id`` (int32), ``movie_id`` (int32), ``rating`` (int8, 1-5),
  ``timestamp`` (int64, seconds), in file order.
* ``movies``: ``movie_id``, ``title`` (without the year suffix), ``year`` (nullable
  Int64), ``genres`` (a tuple of genre names).
* ``users``: ``user_id``, ``gender`` ("M"/"F"), ``age`` (the ml-1m age bucket code,
  see :data:`AGE_BUCKETS`), ``occupation`` (the ml-1m occupation id 0-20), ``zip``.

Files are latin-1. ml-1m uses ``::`` separators; ml-100k uses tabs and ``|``.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.errors import DataError

#: ml-1m age buckets: code -> (first year, last year) of the bucket.
AGE_BUCKETS: dict[int, tuple[int, int]] = {
    1: (0, 17), 18: (18, 24), 25: (25, 34), 35: (35, 44), 45: (45, 49), 50: (50, 55), 56: (56, 200),
}
NUM_OCCUPATIONS = 21
#: The genres of MovieLens (ml-1m's 18; ml-100k adds "unknown" for a few movies).
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western")
#: ml-1m occupation ids 0-20 and their names (ml-1m README).
OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
#: ml-100k occupation names mapped onto the ml-1m occupation ids (README of ml-1m).
ML100K_OCCUPATIONS: dict[str, int] = {
    "administrator": 3, "artist": 2, "doctor": 6, "educator": 1, "engineer": 17,
    "entertainment": 0, "executive": 7, "healthcare": 6, "homemaker": 9, "lawyer": 11,
    "librarian": 1, "marketing": 14, "none": 0, "other": 0, "programmer": 12, "retired": 13,
    "salesman": 14, "scientist": 15, "student": 4, "technician": 17, "writer": 20,
}
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")


#: A representative age in years of each bucket (a catalog user's profile holds the code).
AGE_BUCKET_YEARS: dict[int, int] = {1: 16, 18: 21, 25: 30, 35: 40, 45: 47, 50: 53, 56: 60}


def bucket_years(code: int) -> int:
    """The representative age in years of an ml-1m age bucket code (30 when unknown)."""
    return AGE_BUCKET_YEARS.get(code, 30)


def age_bucket(years: int) -> int:
    """Map an age in years to the ml-1m bucket code (1, 18, 25, 35, 45, 50, 56)."""
    if years < 0 or years > 200:
        raise ValueError(f"age out of range: {years}")
    for code, (low, high) in AGE_BUCKETS.items():
        if low <= years <= high:
            return code
    raise ValueError(f"age out of range: {years}")  # pragma: no cover - buckets are total


@dataclass(frozen=True)
class MovieLens:
    """One parsed data set in the project's schema."""

    name: str
    ratings: pd.DataFrame
    movies: pd.DataFrame
    users: pd.DataFrame
    checksum: str = ""
    genres: tuple[str, ...] = field(default=())

    @property
    def num_ratings(self) -> int:
        return len(self.ratings)


def profiled(data: MovieLens) -> MovieLens:
    """``data`` with only the ratings of users who have a profile in ``users`` (a catalog
    snapshot keeps the ratings of users who never gave one: models of profiles skip them)."""
    keep = data.ratings["user_id"].isin(data.users["user_id"])
    if keep.all():
        return data
    return replace(data, ratings=data.ratings[keep].reset_index(drop=True))


def split_title(raw: str) -> tuple[str, int | None]:
    """Split ``"Toy Story (1995)"`` into ``("Toy Story", 1995)``; no year gives None."""
    match = _TITLE_YEAR.match(raw.strip())
    if match is None:
        return raw.strip(), None
    return match.group("title"), int(match.group("year"))


def files_checksum(paths: list[Path]) -> str:
    """sha256 over the named files' bytes, in order: identifies the exact data used."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _read_table(path: Path, sep: str, names: list[str], dtypes: dict) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"missing MovieLens file: {path}")
    text = path.read_bytes().decode("latin-1")
    if sep == "::":
        text, sep = text.replace("::", "\t"), "\t"
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, header=None, names=names, dtype=dtypes,
                           engine="c", quoting=3, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"malformed MovieLens file {path}: {exc}") from exc


def _ratings(path: Path, sep: str) -> pd.DataFrame:
    frame = _read_table(path, sep, ["user_id", "movie_id", "rating", "timestamp"],
                        {"user_id": np.int32, "movie_id": np.int32, "rating": np.int8,
                         "timestamp": np.int64})
    if len(frame) and (frame["rating"].min() < 1 or frame["rating"].max() > 5):
        raise DataError(f"ratings outside 1-5 in {path}")
    return frame


def _movies_frame(ids, raw_titles, genres) -> pd.DataFrame:
    pairs = [split_title(t) for t in raw_titles]
    return pd.DataFrame({
        "movie_id": np.asarray(ids, dtype=np.int32),
        "title": [p[0] for p in pairs],
        "year": pd.array([p[1] for p in pairs], dtype="Int64"),
        "genres": list(genres),
    })


def genre_vocabulary(movies: pd.DataFrame) -> tuple[str, ...]:
    """Sorted distinct genre names of a movies frame."""
    return tuple(sorted({g for gs in movies["genres"] for g in gs}))


def parse_ml1m(directory: Path, name: str = "ml-1m") -> MovieLens:
    """Parse an ml-1m style directory (``ratings.dat``, ``movies.dat``, ``users.dat``)."""
    paths = [directory / f for f in ("ratings.dat", "movies.dat", "users.dat")]
    ratings = _ratings(paths[0], "::")
    raw = _read_table(paths[1], "::", ["movie_id", "title", "genres"], {"movie_id": np.int32,
                      "title": str, "genres": str})
    movies = _movies_frame(raw["movie_id"], raw["title"],
                           [tuple(g for g in s.split("|") if g) for s in raw["genres"]])
    users = _read_table(paths[2], "::", ["user_id", "gender", "age", "occupation", "zip"],
                        {"user_id": np.int32, "gender": str, "age": np.int16,
                         "occupation": np.int16, "zip": str})
    _check_users(users, paths[2])
    return MovieLens(name, ratings, movies, users, files_checksum(paths), genre_vocabulary(movies))


def parse_ml100k(directory: Path, name: str = "ml-100k") -> MovieLens:
    """Parse an ml-100k directory (``u.data``, ``u.item``, ``u.user``, ``u.genre``)."""
    paths = [directory / f for f in ("u.data", "u.item", "u.user", "u.genre")]
    ratings = _ratings(paths[0], "\t")
    genre_names = [line.split("|")[0] for line in
                   paths[3].read_bytes().decode("latin-1").splitlines() if "|" in line]
    item_cols = ["movie_id", "title", "date", "video", "url", *genre_names]
    raw = _read_table(paths[1], "|", item_cols, {c: str for c in item_cols[1:]} |
                      {"movie_id": np.int32})
    flags = raw[genre_names].to_numpy() == "1"
    genres = [tuple(g for g, on in zip(genre_names, row, strict=True) if on) for row in flags]
    movies = _movies_frame(raw["movie_id"], raw["title"], genres)
    raw_users = _read_table(paths[2], "|", ["user_id", "age", "gender", "occupation", "zip"],
                            {"user_id": np.int32, "age": np.int16, "gender": str,
                             "occupation": str, "zip": str})
    users = pd.DataFrame({
        "user_id": raw_users["user_id"], "gender": raw_users["gender"],
        "age": raw_users["age"].map(age_bucket).astype(np.int16),
        "occupation": raw_users["occupation"].map(ML100K_OCCUPATIONS).fillna(0).astype(np.int16),
        "zip": raw_users["zip"]})
    _check_users(users, paths[2])
    return MovieLens(name, ratings, movies, users, files_checksum(paths), genre_vocabulary(movies))


def _check_users(users: pd.DataFrame, path: Path) -> None:
    if not users["gender"].isin(["M", "F"]).all():
        raise DataError(f"gender other than M/F in {path}")
    if not users["age"].isin(list(AGE_BUCKETS)).all():
        raise DataError(f"age outside the ml-1m buckets in {path}")
    if not users["occupation"].between(0, NUM_OCCUPATIONS - 1).all():
        raise DataError(f"occupation outside 0-20 in {path}")


def parse_directory(directory: Path, name: str | None = None) -> MovieLens:
    """Parse whichever MovieLens layout ``directory`` holds."""
    if (directory / "ratings.dat").is_file():
        return parse_ml1m(directory, name or "ml-1m")
    if (directory / "u.data").is_file():
        return parse_ml100k(directory, name or "ml-100k")
    raise DataError(f"no MovieLens files (ratings.dat or u.data) in {directory}")
