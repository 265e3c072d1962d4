"""The catalog's PostgreSQL store: psycopg 3 async with a connection pool.

Every query is parameterized. Connection problems (server down, pool exhausted,
statement timeout) become :class:`movierec.errors.Unavailable` or
:class:`~movierec.errors.DeadlineExceeded`. Connections are not pinged on checkout
(that would double every round trip): a connection broken by a PostgreSQL restart
fails its statement, is discarded by the pool and the statement is retried once on a
fresh connection, so after a restart the next calls succeed without a service restart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from movierec.errors import DeadlineExceeded, NotFound, Unavailable


@dataclass(frozen=True)
class Movie:
    movie_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]


@dataclass(frozen=True)
class User:
    user_id: int
    gender: str | None
    age: int | None
    occupation: int | None
    zip: str | None


@dataclass(frozen=True)
class History:
    """A user's ratings as parallel lists, newest first."""

    movie_ids: list[int]
    ratings: list[int]
    timestamps: list[int]


@dataclass(frozen=True)
class Rating:
    user_id: int
    movie_id: int
    rating: int
    rated_at: dt.datetime


@dataclass(frozen=True)
class SearchQuery:
    text: str
    genres: tuple[str, ...] = ()
    min_year: int | None = None
    max_year: int | None = None
    limit: int = 20
    offset: int = 0


_MOVIE_COLS = "m.movie_id, m.title, m.year, m.genres"
_FILTERS = """(cardinality(%(genres)s::text[]) = 0 OR m.genres && %(genres)s::text[])
  AND (%(min_year)s::int IS NULL OR m.year >= %(min_year)s::int)
  AND (%(max_year)s::int IS NULL OR m.year <= %(max_year)s::int)"""
_PAGE = "LIMIT %(limit)s OFFSET %(offset)s"
# Words as prefixes, all required, ranked by ts_rank then popularity.
_SEARCH_FTS = f"""
SELECT {_MOVIE_COLS}, ts_rank(m.title_tsv, q) AS score
FROM movies m CROSS JOIN to_tsquery('simple', %(tsquery)s) q
LEFT JOIN movie_popularity p ON p.movie_id = m.movie_id
WHERE m.title_tsv @@ q AND {_FILTERS}
ORDER BY score DESC, coalesce(p.rating_count, 0) DESC, m.movie_id {_PAGE}"""
# Typo-tolerant fallback when no title has every word: trigram word similarity.
_SEARCH_TRGM = f"""
SELECT {_MOVIE_COLS}, word_similarity(%(q)s, lower(m.title)) AS score
FROM movies m LEFT JOIN movie_popularity p ON p.movie_id = m.movie_id
WHERE %(q)s <%% lower(m.title) AND {_FILTERS}
ORDER BY score DESC, coalesce(p.rating_count, 0) DESC, m.movie_id {_PAGE}"""
# No text: browse the filtered catalog by popularity.
_BROWSE = f"""
SELECT {_MOVIE_COLS}, coalesce(p.rating_count, 0)::real AS score
FROM movies m LEFT JOIN movie_popularity p ON p.movie_id = m.movie_id
WHERE {_FILTERS}
ORDER BY score DESC, m.movie_id {_PAGE}"""
_WORD = re.compile(r"[^\W_]+")
_POPULAR_SQL = f"""
SELECT {_MOVIE_COLS}, p.rating_count::real
FROM movie_popularity p JOIN movies m ON m.movie_id = p.movie_id
WHERE (cardinality(%(genres)s::text[]) = 0 OR m.genres && %(genres)s::text[])
  AND NOT (m.movie_id = ANY(%(exclude)s::int[]))
ORDER BY p.rating_count DESC, p.damped_mean DESC, m.movie_id
LIMIT %(limit)s"""
_UPSERT_RATING = """
WITH new_user AS (
    INSERT INTO users (user_id) VALUES (%(user)s) ON CONFLICT (user_id) DO NOTHING
)
INSERT INTO ratings (user_id, movie_id, rating, rated_at)
VALUES (%(user)s, %(movie)s, %(rating)s, now())
ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, rated_at = now()
RETURNING user_id, movie_id, rating, rated_at"""


#: A user's profile with their ratings as three arrays (newest first): no row at all for
#: an unknown user, empty arrays for a user without ratings.
_USER_HISTORY = """
SELECT u.gender, u.age, u.occupation, u.zip,
       coalesce(array_agg(h.movie_id ORDER BY h.rated_at DESC, h.movie_id)
                FILTER (WHERE h.movie_id IS NOT NULL), '{}'),
       coalesce(array_agg(h.rating ORDER BY h.rated_at DESC, h.movie_id)
                FILTER (WHERE h.movie_id IS NOT NULL), '{}'),
       coalesce(array_agg(extract(epoch FROM h.rated_at)::bigint
                          ORDER BY h.rated_at DESC, h.movie_id)
                FILTER (WHERE h.movie_id IS NOT NULL), '{}')
FROM users u
LEFT JOIN LATERAL (
    SELECT movie_id, rating, rated_at FROM ratings
    WHERE user_id = u.user_id AND rating >= %(min)s
    ORDER BY rated_at DESC, movie_id LIMIT %(limit)s) h ON true
WHERE u.user_id = %(user)s
GROUP BY u.user_id"""


#: Advisory lock key of the popularity refresh (any constant shared by the replicas).
POPULARITY_LOCK = 0x6D6F7669  # "movi"


def _movie(row: Sequence) -> Movie:
    return Movie(int(row[0]), row[1], row[2], tuple(row[3] or ()))


class CatalogStore:
    """Queries of the catalog service; one instance per process."""

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 10,
                 statement_timeout_ms: int = 2000, connect_timeout: float = 3.0) -> None:
        options = f"-c statement_timeout={statement_timeout_ms}"
        self.pool = AsyncConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False,
            kwargs={"options": options, "connect_timeout": max(1, int(connect_timeout)),
                    "autocommit": True, "row_factory": tuple_row})

    async def open(self) -> None:
        """Start the pool; connections are made in the background and retried."""
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float) -> AsyncIterator[psycopg.AsyncConnection]:
        try:
            async with self.pool.connection(timeout=timeout) as conn:
                yield conn
        except PoolTimeout as exc:
            raise Unavailable("catalog database unavailable") from exc
        except psycopg.errors.QueryCanceled as exc:
            raise DeadlineExceeded("catalog query timed out") from exc
        except psycopg.OperationalError as exc:
            raise Unavailable("catalog database unavailable") from exc

    async def _fetch(self, sql: str, params: dict | tuple, timeout: float) -> list[tuple]:
        """Run one statement; a connection broken by a server restart is replaced once.

        Every statement here is safe to repeat (reads, and an idempotent upsert).
        """
        deadline = time.monotonic() + timeout
        for attempt in (1, 2):
            try:
                async with self.connection(max(0.01, deadline - time.monotonic())) as conn:
                    cursor = await conn.execute(sql, params)
                    return await cursor.fetchall()
            except Unavailable:
                if attempt == 2 or deadline - time.monotonic() < 0.05:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def ping(self, timeout: float = 2.0) -> None:
        await self._fetch("SELECT 1", (), timeout)

    async def get_movies(self, ids: Sequence[int], timeout: float) -> dict[int, Movie]:
        rows = await self._fetch(f"SELECT {_MOVIE_COLS} FROM movies m "
                                 "WHERE m.movie_id = ANY(%s::int[])", (list(ids),), timeout)
        return {int(r[0]): _movie(r) for r in rows}

    async def search_movies(self, query: SearchQuery, timeout: float) -> list[tuple[Movie, float]]:
        """Full-text prefix search, trigram fallback for typos, popularity when no text."""
        text = query.text.lower()
        params = {"q": text, "genres": list(query.genres), "min_year": query.min_year,
                  "max_year": query.max_year, "limit": query.limit, "offset": query.offset,
                  "tsquery": " & ".join(f"{w}:*" for w in _WORD.findall(text))}
        if not text:
            rows = await self._fetch(_BROWSE, params, timeout)
        elif params["tsquery"]:
            rows = await self._fetch(_SEARCH_FTS, params, timeout)
            if not rows and (query.offset == 0 or not await self._any_fts(params, timeout)):
                rows = await self._fetch(_SEARCH_TRGM, params, timeout)
        else:
            rows = await self._fetch(_SEARCH_TRGM, params, timeout)
        return [(_movie(r), float(r[4])) for r in rows]

    async def _any_fts(self, params: dict, timeout: float) -> bool:
        rows = await self._fetch("SELECT EXISTS (SELECT 1 FROM movies WHERE title_tsv @@ "
                                 "to_tsquery('simple', %(tsquery)s))", params, timeout)
        return bool(rows[0][0])

    async def list_genres(self, timeout: float) -> list[str]:
        rows = await self._fetch("SELECT DISTINCT unnest(genres) AS g FROM movies ORDER BY g",
                                 (), timeout)
        return [r[0] for r in rows]

    async def list_popular(self, genres: Sequence[str], limit: int, exclude: Sequence[int],
                           timeout: float) -> list[tuple[Movie, float]]:
        params = {"genres": list(genres), "limit": limit, "exclude": list(exclude)}
        rows = await self._fetch(_POPULAR_SQL, params, timeout)
        return [(_movie(r), float(r[4])) for r in rows]

    async def get_user(self, user_id: int, timeout: float) -> User:
        rows = await self._fetch("SELECT user_id, gender, age, occupation, zip FROM users "
                                 "WHERE user_id = %s", (user_id,), timeout)
        if not rows:
            raise NotFound(f"user {user_id} not found")
        return User(*rows[0])

    async def get_user_history(self, user_id: int, limit: int, min_rating: int,
                               timeout: float) -> tuple[User, History]:
        """The user's profile and ratings (newest first) in one statement; NotFound for a
        user the catalog does not know."""
        rows = await self._fetch(_USER_HISTORY, {"user": user_id, "min": min_rating,
                                                 "limit": limit}, timeout)
        if not rows:
            raise NotFound(f"user {user_id} not found")
        *profile, movie_ids, ratings, stamps = rows[0]
        return User(user_id, *profile), History(movie_ids, ratings, stamps)

    async def list_movies(self, after: int, limit: int, timeout: float) -> tuple[list[Movie], int]:
        """Movies with ids above ``after``, in id order, and the catalog version, read in
        one statement (one snapshot)."""
        rows = await self._fetch(
            f"SELECT {_MOVIE_COLS}, (SELECT version FROM catalog_version) FROM movies m "
            "WHERE m.movie_id > %s ORDER BY m.movie_id LIMIT %s", (after, limit), timeout)
        if not rows:
            return [], await self.catalog_version(timeout)
        return [_movie(r) for r in rows], int(rows[0][-1])

    async def catalog_version(self, timeout: float) -> int:
        rows = await self._fetch("SELECT version FROM catalog_version", (), timeout)
        return int(rows[0][0])

    async def record_rating(self, user_id: int, movie_id: int, rating: int,
                            timeout: float) -> Rating:
        """One statement; an unknown movie fails its foreign key and changes nothing."""
        params = {"user": user_id, "movie": movie_id, "rating": rating}
        try:
            rows = await self._fetch(_UPSERT_RATING, params, timeout)
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound(f"movie {movie_id} not found") from None
        return Rating(*rows[0])

    async def refresh_popularity(self, timeout: float = 60.0) -> bool:
        """Recompute ListPopular's counts unless another replica is doing it right now
        (a transaction-scoped advisory lock); readers are never blocked. True if done."""
        async with self.connection(timeout) as conn, conn.transaction():
            cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)",
                                        (POPULARITY_LOCK,))
            if not (await cursor.fetchone())[0]:
                return False
            await conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY movie_popularity")
        return True
