"""``movierec snapshot``: the catalog as a data set, read in one consistent transaction.

What retraining learns from is the system of record, not the MovieLens files it was
bootstrapped from: every rating recorded online, every movie and user added through the
API, and no trace of a deleted user (their rows are gone, ratings by cascade). The
snapshot is read in one ``REPEATABLE READ`` transaction (one view of the database, as
of its first query) and written in ml-1m's layout (``ratings.dat``, ``movies.dat``,
``users.dat``, latin-1) under ``$MOVIEREC_HOME/data/catalog-<UTC time>``, so every
command that takes a ``--dataset`` reads it by that name. ``users.dat`` holds the users
with a complete profile (the fusion model's inputs); ratings of users who never gave
one are kept in ``ratings.dat`` for the models that need only ratings.
``snapshot.json`` records when it was taken, the catalog's version and the counts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from movierec.data.source import SNAPSHOT_PREFIX, cache_dir

_MOVIES = "SELECT movie_id, title, year, genres FROM movies ORDER BY movie_id"
_USERS = ("SELECT user_id, gender, age, occupation, coalesce(zip, '') FROM users "
          "WHERE gender IS NOT NULL AND age IS NOT NULL AND occupation IS NOT NULL "
          "ORDER BY user_id")
_RATINGS = ("COPY (SELECT user_id, movie_id, rating, extract(epoch FROM rated_at)::bigint "
            "FROM ratings ORDER BY user_id, rated_at, recorded) TO STDOUT")


@dataclass(frozen=True)
class Snapshot:
    name: str                 # the data set's name: catalog-<time>
    path: Path
    counts: dict[str, int]
    catalog_version: int


def _text(value: str) -> str:
    """A field as ml-1m writes it: latin-1, no separator inside."""
    return value.replace("::", ":").replace("\n", " ").encode("latin-1", "replace").decode(
        "latin-1")


def _movie_line(movie_id: int, title: str, year: int | None, genres: list[str]) -> str:
    named = f"{_text(title)} ({year})" if year else _text(title)
    return f"{movie_id}::{named}::{'|'.join(genres or [])}\n"


async def export(url: str, root: Path | None = None, name: str | None = None) -> Snapshot:
    """Read the catalog in one transaction and write it as a data set; its description."""
    name = name or SNAPSHOT_PREFIX + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = (root or cache_dir()) / name
    staging = path.with_name(f".{name}.tmp")
    staging.mkdir(parents=True, exist_ok=True)
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        version = (await (await conn.execute(
            "SELECT version FROM catalog_version")).fetchone())[0]
        movies = await (await conn.execute(_MOVIES)).fetchall()
        users = await (await conn.execute(_USERS)).fetchall()
        ratings = 0
        with (staging / "ratings.dat").open("w", encoding="latin-1") as out:
            async with conn.cursor().copy(_RATINGS) as copy:
                async for row in copy.rows():
                    out.write("::".join(row) + "\n")
                    ratings += 1
    (staging / "movies.dat").write_text("".join(_movie_line(*m) for m in movies),
                                        encoding="latin-1")
    (staging / "users.dat").write_text(
        "".join(f"{u}::{g}::{a}::{o}::{_text(z)}\n" for u, g, a, o, z in users),
        encoding="latin-1")
    counts = {"movies": len(movies), "users": len(users), "ratings": ratings}
    (staging / "snapshot.json").write_text(json.dumps(
        {"name": name, "taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "catalog_version": int(version), **counts}, indent=1))
    staging.rename(path)
    return Snapshot(name, path, counts, int(version))
