"""``movierec load catalog``: bulk-load movies, users and ratings into PostgreSQL.

Rows are streamed with COPY into temporary staging tables and merged with
``INSERT ... ON CONFLICT`` inside ONE transaction, so:

* a second run changes nothing (same counts, no duplicates, no rewritten rows);
* a killed run rolls back and leaves the previous data intact;
* ratings recorded through the service (RecordRating) are never overwritten by a load.

By default the ratings are the training part of split ``recbole_811`` (what PinSage
trains on and what the embedder reads back as a user's history); ``--split all``
loads every rating instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from tqdm import tqdm

from movierec.data.movielens import MovieLens
from movierec.data.splits import DEFAULT_SEED, make_split
from movierec.services.catalog.migrate import migrate

CHUNK = 100_000
_STAGE = """
CREATE TEMP TABLE stage_movies (movie_id int, title text, year int, genres text[]) ON COMMIT DROP;
CREATE TEMP TABLE stage_users (user_id int, gender char(1), age smallint, occupation smallint,
                               zip text) ON COMMIT DROP;
CREATE TEMP TABLE stage_ratings (user_id int, movie_id int, rating smallint, ts bigint,
                                 line bigint)
    ON COMMIT DROP;"""
_MERGE = [
    """INSERT INTO movies SELECT * FROM stage_movies ON CONFLICT (movie_id) DO UPDATE
       SET title = excluded.title, year = excluded.year, genres = excluded.genres
       WHERE (movies.title, movies.year, movies.genres)
             IS DISTINCT FROM (excluded.title, excluded.year, excluded.genres)""",
    """INSERT INTO users SELECT * FROM stage_users ON CONFLICT (user_id) DO UPDATE
       SET gender = excluded.gender, age = excluded.age, occupation = excluded.occupation,
           zip = excluded.zip
       WHERE (users.gender, users.age, users.occupation, users.zip) IS DISTINCT FROM
             (excluded.gender, excluded.age, excluded.occupation, excluded.zip)""",
    """INSERT INTO ratings (user_id, movie_id, rating, rated_at)
       SELECT user_id, movie_id, rating, to_timestamp(ts) FROM stage_ratings
       ORDER BY line
       ON CONFLICT (user_id, movie_id) DO NOTHING""",
]


def _pg_array(genres: tuple[str, ...]) -> str:
    quoted = ['"' + g.replace("\\", "\\\\").replace('"', '\\"') + '"' for g in genres]
    return "{" + ",".join(quoted) + "}"


def _tsv(frame: pd.DataFrame) -> str:
    return frame.to_csv(header=False, index=False, na_rep="", lineterminator="\n")


def tables(data: MovieLens, ratings: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The staging tables' rows, in COPY column order."""
    movies = pd.DataFrame({"movie_id": data.movies.movie_id,
                           "title": data.movies.title,
                           "year": data.movies.year,
                           "genres": data.movies.genres.map(_pg_array)})
    users = data.users[["user_id", "gender", "age", "occupation", "zip"]]
    return {"stage_movies": movies, "stage_users": users,
            "stage_ratings": recording_order(ratings)}


def recording_order(ratings: pd.DataFrame) -> pd.DataFrame:
    """The ratings' staging rows with their line: the frame's index order, the order
    they were recorded in (a MovieLens file's lines). Inserted in that order, they take
    ``ratings.recorded`` numbers in it (migration 0006)."""
    rows = ratings[["user_id", "movie_id", "rating", "timestamp"]].sort_index(kind="stable")
    return rows.assign(line=np.arange(len(rows), dtype=np.int64))


async def _copy(conn: psycopg.AsyncConnection, table: str, frame: pd.DataFrame,
                bar: tqdm) -> None:
    statement = sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(sql.Identifier(table))
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        for start in range(0, len(frame), CHUNK):
            part = frame.iloc[start:start + CHUNK]
            await copy.write(_tsv(part))
            bar.update(len(part))


async def load(url: str, data: MovieLens, ratings: pd.DataFrame, progress: bool = True) -> dict:
    """Load ``data`` in one transaction; return row counts after the load."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await migrate(conn)
        await conn.set_autocommit(False)
        staged = tables(data, ratings)
        with tqdm(total=sum(len(f) for f in staged.values()), unit="rows", desc="COPY",
                  disable=not progress) as bar:
            async with conn.transaction():
                await conn.execute(_STAGE)
                for table, frame in staged.items():
                    await _copy(conn, table, frame, bar)
                for statement in _MERGE:
                    await conn.execute(statement)
                await conn.execute("REFRESH MATERIALIZED VIEW movie_popularity")
        counts = {}
        for table in ("movies", "users", "ratings"):
            cursor = await conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            counts[table] = (await cursor.fetchone())[0]
        await conn.commit()
        return counts


DEFAULT_SPLIT, DEFAULT_PART = "recbole_811", "train"


def select_ratings(data: MovieLens, split: str = DEFAULT_SPLIT, part: str = DEFAULT_PART,
                   seed: int = DEFAULT_SEED) -> pd.DataFrame:
    if split == "all":
        return data.ratings
    return getattr(make_split(data, split, seed), part)
