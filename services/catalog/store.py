"""The catalog's PostgreSQL store: psycopg 3 async with a connection pool.

Every query is parameterized. Connection problems (server down, pool exhausted,
statement timeout) become :class:`movierec.errors.Unavailable` or
:class:`~movierec.errors.DeadlineExceeded`. Connections are not pinged on checkout
(that would double every round trip): a connection broken by a PostgreSQL restart
fails its statement, is discarded by the pool and the statement is retried once on a
fresh connection, so after a restart the next calls succeed without a service restart.

With a read URL (``CATALOG_READ_DATABASE_URL``: a streaming replica, or several hosts
libpq picks among) a second pool serves the reads that may lag the primary by the
replica's delay: movie search, genres, popular movies and the movie listing
(``read=True`` below). Everything else stays on the primary: every write, and the reads
that must see the writes just acknowledged, a user's profile and history (the gateway
recomputes a user's answers right after their rating), the catalog version (the
gateway's snapshot polls it to notice a write) and movies by id (the gateway asks for
exactly the movies its snapshot lacks, those written since). The read pool's sessions
are read-only (``default_transaction_read_only``), so a write sent there by mistake
fails instead of landing on a replica that would refuse it anyway. Both pools are
exported to Prometheus (:mod:`movierec.services.catalog.pools`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from movierec import tracing
from movierec.errors import DeadlineExceeded, FailedPrecondition, NotFound, Unavailable
from movierec.limits import MAX_ID
from movierec.services.catalog.pools import POOLS

T = TypeVar("T")


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
ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, rated_at = now(),
    recorded = DEFAULT
RETURNING user_id, movie_id, rating, rated_at"""


#: A user's profile with their ratings as three arrays (newest first): no row at all for
#: an unknown user, empty arrays for a user without ratings.
_USER_HISTORY = """
SELECT u.gender, u.age, u.occupation, u.zip,
       coalesce(array_agg(h.movie_id ORDER BY h.rated_at DESC, h.recorded DESC)
                FILTER (WHERE h.movie_id IS NOT NULL), '{}'),
       coalesce(array_agg(h.rating ORDER BY h.rated_at DESC, h.recorded DESC)
                FILTER (WHERE h.movie_id IS NOT NULL), '{}'),
       coalesce(array_agg(extract(epoch FROM h.rated_at)::bigint
                          ORDER BY h.rated_at DESC, h.recorded DESC)
                FILTER (WHERE h.movie_id IS NOT NULL), '{}')
FROM users u
LEFT JOIN LATERAL (
    SELECT movie_id, rating, rated_at, recorded FROM ratings
    WHERE user_id = u.user_id AND rating >= %(min)s
    ORDER BY rated_at DESC, recorded DESC LIMIT %(limit)s) h ON true
WHERE u.user_id = %(user)s
GROUP BY u.user_id"""


#: Catalog writes. A write that assigns ids (or matches titles) locks its table against
#: other writers (readers go on) for its transaction, so two writers never pick one id.
_LOCK_MOVIES = "LOCK TABLE movies IN SHARE ROW EXCLUSIVE MODE"
_LOCK_USERS = "LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE"
_MAX_MOVIE_ID = "SELECT coalesce(max(movie_id), 0) FROM movies"
_MAX_USER_ID = "SELECT coalesce(max(user_id), 0) FROM users"
#: The request's titles as PostgreSQL lowers them (the one case-folding rule), in order.
_LOWER_TITLES = """
SELECT coalesce(array_agg(lower(t) ORDER BY n), '{}')
FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, n)"""
#: The rows a batch can touch: those it names by id, and those an id-less movie matches
#: on (lower(title), year) (0 standing for an unknown year).
_MOVIE_CANDIDATES = f"""
SELECT {_MOVIE_COLS}, lower(m.title) FROM movies m
WHERE m.movie_id = ANY(%(ids)s::int[])
   OR (lower(m.title), coalesce(m.year, 0)) IN (
       SELECT lower(t), y FROM unnest(%(titles)s::text[], %(years)s::int[]) AS k(t, y))"""
#: One statement for every changed movie (so catalog_version moves once).
_WRITE_MOVIES = """
INSERT INTO movies (movie_id, title, year, genres)
SELECT m.movie_id, m.title, m.year, ARRAY(SELECT jsonb_array_elements_text(m.genres))
FROM jsonb_to_recordset(%s) AS m(movie_id int, title text, year int, genres jsonb)
ON CONFLICT (movie_id) DO UPDATE
SET title = excluded.title, year = excluded.year, genres = excluded.genres"""
_USER_COLS = "user_id, gender, age, occupation, zip"
_UPSERT_USER = f"""
WITH before AS (SELECT 1 FROM users WHERE user_id = %(user)s)
INSERT INTO users (user_id, gender, age, occupation)
VALUES (%(user)s, %(gender)s, %(age)s, %(occupation)s)
ON CONFLICT (user_id) DO UPDATE
SET gender = excluded.gender, age = excluded.age, occupation = excluded.occupation
RETURNING {_USER_COLS}, NOT EXISTS (SELECT 1 FROM before)"""
#: A sign-up's row, under the users lock (no ON CONFLICT: it never merges into a user).
_SIGN_UP = f"""
INSERT INTO users (user_id, gender, age, occupation)
VALUES (%(user)s, %(gender)s, %(age)s, %(occupation)s)
RETURNING {_USER_COLS}"""
#: The ratings cascade (schema); the count is read in the statement's snapshot (before).
_DELETE_USER = """
WITH gone AS (DELETE FROM users WHERE user_id = %(user)s RETURNING user_id)
SELECT user_id, (SELECT count(*) FROM ratings WHERE user_id = %(user)s) FROM gone"""


#: Advisory lock key of the popularity refresh (any constant shared by the replicas).
POPULARITY_LOCK = 0x6D6F7669  # "movi"


def _movie(row: Sequence) -> Movie:
    return Movie(int(row[0]), row[1], row[2], tuple(row[3] or ()))


async def _one(conn: psycopg.AsyncConnection, sql: str, params: dict | tuple = ()) -> tuple:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchone()


async def _next_id(conn: psycopg.AsyncConnection, sql: str, what: str) -> int:
    """The id above the largest one (``sql`` reads it); FailedPrecondition when none is
    left below MAX_ID."""
    top = int((await _one(conn, sql))[0])
    if top >= MAX_ID:
        raise FailedPrecondition(f"no {what} id is left above {top}")
    return top + 1


class _MovieBatch:
    """A batch of movie upserts applied, in request order, to the rows it can touch, as
    one statement per movie would: a movie with an id replaces that row; one without
    takes the smallest id with its (lowered title, year), else the id above the largest.
    """

    def __init__(self, before: dict[int, Movie], lowered: dict[int, str], top: int) -> None:
        self.before = before
        self.rows = dict(before)
        self.top = top
        self.ids_by_key: dict[tuple[str, int], set[int]] = {}
        self.key_of: dict[int, tuple[str, int]] = {}
        for movie_id, movie in before.items():
            self._index(movie_id, lowered[movie_id], movie.year)

    def _index(self, movie_id: int, lowered: str, year: int | None) -> None:
        old = self.key_of.get(movie_id)
        if old is not None:
            self.ids_by_key[old].discard(movie_id)
        key = self.key_of[movie_id] = (lowered, year or 0)
        self.ids_by_key.setdefault(key, set()).add(movie_id)

    def _new_id(self) -> int:
        if self.top >= MAX_ID:
            raise FailedPrecondition(f"no movie id is left above {self.top}")
        return self.top + 1

    def apply(self, movie: Movie, lowered: str) -> Movie:
        matches = self.ids_by_key.get((lowered, movie.year or 0))
        movie_id = movie.movie_id or (min(matches) if matches else self._new_id())
        stored = Movie(movie_id, movie.title, movie.year, movie.genres)
        self.rows[movie_id] = stored
        self._index(movie_id, lowered, movie.year)
        self.top = max(self.top, movie_id)
        return stored

    def changed(self) -> list[Movie]:
        return [m for movie_id, m in self.rows.items() if self.before.get(movie_id) != m]


class CatalogStore:
    """Queries of the catalog service; one instance per process."""

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 10,
                 statement_timeout_ms: int = 2000, connect_timeout: float = 3.0,
                 read_url: str = "") -> None:
        def pool(target: str, name: str, low: int, high: int,
                 extra: str = "") -> AsyncConnectionPool:
            options = f"-c statement_timeout={statement_timeout_ms}{extra}"
            # With tracing on, each new connection is instrumented: a span per query.
            return AsyncConnectionPool(
                target, min_size=low, max_size=high, open=False, name=name,
                configure=tracing.psycopg_configure(),
                kwargs={"options": options, "connect_timeout": max(1, int(connect_timeout)),
                        "autocommit": True, "row_factory": tuple_row,
                        "application_name": f"movierec-catalog-{name}"})

        self.pool = pool(url, "primary", min_size, max_size)
        #: The pool of the replica reads (the primary's when there is no read URL).
        self.read_pool = pool(read_url, "replica", min_size, max_size,
                              " -c default_transaction_read_only=on") if read_url else self.pool

    @property
    def pools(self) -> dict[str, AsyncConnectionPool]:
        """The open pools by their ``pool`` label (one when reads share the primary's)."""
        return {p.name: p for p in (self.pool, self.read_pool)}

    async def open(self) -> None:
        """Start the pools; connections are made in the background and retried."""
        for name, pool in self.pools.items():
            await pool.open(wait=False)
            POOLS.track(name, pool)

    async def close(self) -> None:
        for pool in self.pools.values():
            POOLS.forget(pool)
            await pool.close()

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float,
                         read: bool = False) -> AsyncIterator[psycopg.AsyncConnection]:
        """A connection of the primary's pool, or the replica's when ``read``."""
        try:
            async with (self.read_pool if read else self.pool).connection(
                    timeout=timeout) as conn:
                yield conn
        except PoolTimeout as exc:
            raise Unavailable("catalog database unavailable") from exc
        except psycopg.errors.QueryCanceled as exc:
            raise DeadlineExceeded("catalog query timed out") from exc
        except psycopg.OperationalError as exc:
            raise Unavailable("catalog database unavailable") from exc

    async def _fetch(self, sql: str, params: dict | tuple, timeout: float, *,
                     retry: bool = True, read: bool = False) -> list[tuple]:
        """Run one statement; a connection broken by a server restart is replaced once
        (``retry``: for statements safe to repeat, reads and idempotent upserts).
        ``read``: a read that may lag the primary, for the replica's pool."""
        async def statement(conn: psycopg.AsyncConnection) -> list[tuple]:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()
        return await self._run(statement, timeout, retry=retry, transaction=False, read=read)

    async def _run(self, work: Callable[[psycopg.AsyncConnection], Awaitable[T]],
                   timeout: float, *, retry: bool, transaction: bool = True,
                   read: bool = False) -> T:
        """``work(conn)``, in one transaction unless ``transaction`` is false; retried once
        on a fresh connection when ``retry`` and the first one was broken."""
        deadline = time.monotonic() + timeout
        for attempt in (1, 2):
            try:
                async with self.connection(max(0.01, deadline - time.monotonic()),
                                           read) as conn:
                    if not transaction:
                        return await work(conn)
                    async with conn.transaction():
                        return await work(conn)
            except Unavailable:
                if not retry or attempt == 2 or deadline - time.monotonic() < 0.05:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def ping(self, timeout: float = 2.0) -> None:
        """Raise unless the primary answers, and the replica when reads have their own."""
        await self._fetch("SELECT 1", (), timeout)
        if self.read_pool is not self.pool:
            await self._fetch("SELECT 1", (), timeout, read=True)

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
            rows = await self._fetch(_BROWSE, params, timeout, read=True)
        elif params["tsquery"]:
            rows = await self._fetch(_SEARCH_FTS, params, timeout, read=True)
            if not rows and (query.offset == 0 or not await self._any_fts(params, timeout)):
                rows = await self._fetch(_SEARCH_TRGM, params, timeout, read=True)
        else:
            rows = await self._fetch(_SEARCH_TRGM, params, timeout, read=True)
        return [(_movie(r), float(r[4])) for r in rows]

    async def _any_fts(self, params: dict, timeout: float) -> bool:
        rows = await self._fetch("SELECT EXISTS (SELECT 1 FROM movies WHERE title_tsv @@ "
                                 "to_tsquery('simple', %(tsquery)s))", params, timeout,
                                 read=True)
        return bool(rows[0][0])

    async def list_genres(self, timeout: float) -> list[str]:
        rows = await self._fetch("SELECT DISTINCT unnest(genres) AS g FROM movies ORDER BY g",
                                 (), timeout, read=True)
        return [r[0] for r in rows]

    async def list_popular(self, genres: Sequence[str], limit: int, exclude: Sequence[int],
                           timeout: float) -> list[tuple[Movie, float]]:
        params = {"genres": list(genres), "limit": limit, "exclude": list(exclude)}
        rows = await self._fetch(_POPULAR_SQL, params, timeout, read=True)
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
            "WHERE m.movie_id > %s ORDER BY m.movie_id LIMIT %s", (after, limit), timeout,
            read=True)
        if not rows:   # the version as the replica has it, like the rows'
            rows = await self._fetch("SELECT version FROM catalog_version", (), timeout,
                                     read=True)
            return [], int(rows[0][0])
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

    async def upsert_movies(self, movies: Sequence[Movie], timeout: float) -> list[Movie]:
        """Add or update ``movies`` (``movie_id`` 0: match on title and year, else a new id)
        in one transaction; the stored movies in request order. Rows that would not change
        are not written, so the same batch twice changes nothing (nor the catalog
        version) the second time; idempotent, hence retried after a broken connection."""
        async def work(conn: psycopg.AsyncConnection) -> list[Movie]:
            await conn.execute(_LOCK_MOVIES)
            lowered = (await _one(conn, _LOWER_TITLES, ([m.title for m in movies],)))[0]
            batch = await self._movie_batch(conn, movies, lowered)
            stored = [batch.apply(m, low) for m, low in zip(movies, lowered, strict=True)]
            changed = batch.changed()
            if changed:
                await conn.execute(_WRITE_MOVIES, (Jsonb([
                    {"movie_id": m.movie_id, "title": m.title, "year": m.year,
                     "genres": list(m.genres)} for m in changed]),))
            return stored
        return await self._run(work, timeout, retry=True)

    @staticmethod
    async def _movie_batch(conn: psycopg.AsyncConnection, movies: Sequence[Movie],
                           lowered: Sequence[str]) -> _MovieBatch:
        keyless = [(m.title, m.year or 0) for m in movies if not m.movie_id]
        cursor = await conn.execute(_MOVIE_CANDIDATES, {
            "ids": [m.movie_id for m in movies if m.movie_id],
            "titles": [t for t, _ in keyless], "years": [y for _, y in keyless]})
        rows = await cursor.fetchall()
        top = int((await _one(conn, _MAX_MOVIE_ID))[0])
        return _MovieBatch({int(r[0]): _movie(r) for r in rows},
                           {int(r[0]): r[4] for r in rows}, top)

    async def upsert_user(self, user_id: int | None, age: int, gender: str, occupation: int,
                          timeout: float) -> tuple[User, bool]:
        """Set a user's profile (``age``: the bucket code), creating the user if needed; no
        id: a sign-up with the id above the largest. (stored user, created)."""
        params = {"user": user_id, "gender": gender, "age": age, "occupation": occupation}
        if user_id is not None:
            row = (await self._fetch(_UPSERT_USER, params, timeout))[0]
            return User(*row[:5]), bool(row[5])

        async def sign_up(conn: psycopg.AsyncConnection) -> tuple[User, bool]:
            await conn.execute(_LOCK_USERS)
            params["user"] = await _next_id(conn, _MAX_USER_ID, "user")
            return User(*await _one(conn, _SIGN_UP, params)), True
        return await self._run(sign_up, timeout, retry=False)

    async def delete_user(self, user_id: int, timeout: float) -> int:
        """Delete a user and (the schema cascades) their ratings; the number of ratings
        deleted. NotFound for an unknown user. Not retried: a second try would say so."""
        rows = await self._fetch(_DELETE_USER, {"user": user_id}, timeout, retry=False)
        if not rows:
            raise NotFound(f"user {user_id} not found")
        return int(rows[0][1])

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
