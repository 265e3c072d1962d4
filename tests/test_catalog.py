"""Catalog service on a real PostgreSQL: every RPC, error codes, injection, loader, restarts."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import pandas as pd
import prometheus_client
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_helpers import wait_serving

from movierec.catalog.v1 import catalog_pb2 as pb
from movierec.catalog.v1 import catalog_pb2_grpc
from movierec.common.v1 import common_pb2
from movierec.data.synthetic import generate
from movierec.models.user_input import newest_first
from movierec.server import metrics
from movierec.services.catalog import loader
from movierec.services.catalog.server import CatalogSettings, create_server
from movierec.services.catalog.store import POPULARITY_LOCK, CatalogStore
from movierec.stack.local_postgres import LocalPostgres

INJECTION = "'; DROP TABLE movies; --"
DATA = generate(60, 80, 12, seed=11)


def _fresh_database(base_url: str) -> str:
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    return base_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="module")
def catalog_url(database_url: str) -> str:
    url = _fresh_database(database_url)
    asyncio.run(loader.load(url, DATA, DATA.ratings, progress=False))
    return url


async def _serve(url: str, **overrides):
    config = CatalogSettings(**{"database_url": url, "metrics_port": -1,
                                "health_interval": 0.2, **overrides})
    server, port = await create_server(config, 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return server, channel, catalog_pb2_grpc.CatalogStub(channel)


def run(url: str, scenario):
    """Start the catalog on ``url``, wait until SERVING, run ``scenario(stub)``."""
    async def main():
        server, channel, stub = await _serve(url)
        try:
            await wait_serving(channel)
            return await scenario(stub)
        finally:
            await channel.close()
            await server.stop(0)
    return asyncio.run(main())


async def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details()


def test_get_movies_keeps_order_and_reports_missing(catalog_url: str) -> None:
    async def scenario(stub):
        return await stub.GetMovies(pb.GetMoviesRequest(movie_ids=[5, 999, 2, 5]), timeout=5)
    reply = run(catalog_url, scenario)
    assert [m.movie_id for m in reply.movies] == [5, 2, 5]
    assert list(reply.missing_ids) == [999]
    expected = DATA.movies.set_index("movie_id").loc[5]
    assert reply.movies[0].title == expected.title and list(reply.movies[0].genres) == \
        list(expected.genres)


def test_search_ranks_titles_and_pages(catalog_url: str) -> None:
    word = DATA.movies.title.iloc[0].split()[0]

    async def scenario(stub):
        first = await stub.SearchMovies(pb.SearchMoviesRequest(query=word, limit=3), timeout=5)
        second = await stub.SearchMovies(pb.SearchMoviesRequest(
            query=word, limit=3, page_token=first.next_page_token), timeout=5)
        foreign = _code(stub.SearchMovies(pb.SearchMoviesRequest(
            query="other", limit=3, page_token=first.next_page_token), timeout=5))
        return first, second, await foreign
    first, second, foreign = run(catalog_url, scenario)
    titles = [m.movie.title for m in first.movies]
    assert titles and all(word.lower() in t.lower() for t in titles)
    assert first.next_page_token
    ids = [m.movie.movie_id for m in first.movies] + [m.movie.movie_id for m in second.movies]
    assert len(ids) == len(set(ids))
    assert foreign[0] == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in foreign[1]


def test_search_tolerates_a_typo_and_matches_prefixes(catalog_url: str) -> None:
    word = next(w for t in DATA.movies.title for w in t.split() if len(w) >= 6)
    typo = word[:-2] + word[-1]  # one letter dropped: no title has it, trigrams still match

    async def scenario(stub):
        fuzzy = await stub.SearchMovies(pb.SearchMoviesRequest(query=typo, limit=5), timeout=5)
        prefix = await stub.SearchMovies(pb.SearchMoviesRequest(query=word[:3], limit=5),
                                         timeout=5)
        return fuzzy, prefix
    fuzzy, prefix = run(catalog_url, scenario)
    assert any(word.lower() in m.movie.title.lower() for m in fuzzy.movies)
    assert all(any(w.lower().startswith(word[:3].lower()) for w in m.movie.title.split())
               for m in prefix.movies) and prefix.movies


def test_search_filters_by_genre_and_year(catalog_url: str) -> None:
    async def scenario(stub):
        return await stub.SearchMovies(pb.SearchMoviesRequest(
            genres=["Drama"], years=common_pb2.YearRange(min_year=1950, max_year=1980),
            limit=100), timeout=5)
    reply = run(catalog_url, scenario)
    expected = DATA.movies[DATA.movies.genres.map(lambda g: "Drama" in g)
                           & DATA.movies.year.between(1950, 1980)]
    assert {m.movie.movie_id for m in reply.movies} == set(expected.movie_id)


def test_genres_and_popular(catalog_url: str) -> None:
    async def scenario(stub):
        genres = await stub.ListGenres(pb.ListGenresRequest(), timeout=5)
        popular = await stub.ListPopular(pb.ListPopularRequest(limit=5), timeout=5)
        comedy = await stub.ListPopular(pb.ListPopularRequest(
            genres=["Comedy"], limit=5, exclude_movie_ids=[popular.movies[0].movie.movie_id]),
            timeout=5)
        return genres, popular, comedy
    genres, popular, comedy = run(catalog_url, scenario)
    assert list(genres.genres) == sorted(DATA.genres)
    counts = DATA.ratings.movie_id.value_counts()
    assert [int(m.score) for m in popular.movies] == sorted(counts.values, reverse=True)[:5]
    assert popular.movies[0].movie.movie_id == counts.index[0] or \
        counts[popular.movies[0].movie.movie_id] == counts.iloc[0]
    assert all("Comedy" in m.movie.genres for m in comedy.movies)
    assert popular.movies[0].movie.movie_id not in {m.movie.movie_id for m in comedy.movies}


def test_user_and_history_newest_first(catalog_url: str) -> None:
    async def scenario(stub):
        user = await stub.GetUser(pb.GetUserRequest(user_id=3), timeout=5)
        history = await stub.GetUserHistory(pb.GetUserHistoryRequest(user_id=3), timeout=5)
        liked = await stub.GetUserHistory(pb.GetUserHistoryRequest(user_id=3, min_rating=4,
                                                                   limit=2), timeout=5)
        missing = await _code(stub.GetUser(pb.GetUserRequest(user_id=10_000), timeout=5))
        return user, history, liked, missing
    user, history, liked, missing = run(catalog_url, scenario)
    row = DATA.users.set_index("user_id").loc[3]
    assert (user.user.gender, user.user.age, user.user.occupation) == (row.gender, row.age,
                                                                      row.occupation)
    times = list(history.history.timestamps)
    assert times == sorted(times, reverse=True)
    assert len(history.history.movie_ids) == int((DATA.ratings.user_id == 3).sum())
    assert len(liked.history.ratings) <= 2 and all(r >= 4 for r in liked.history.ratings)
    assert missing[0] == grpc.StatusCode.NOT_FOUND


def test_ratings_of_one_second_are_listed_most_recently_recorded_first(
        database_url: str) -> None:
    """Ties in time keep the order the ratings were recorded in (the file's lines), the
    order the evaluation's newest_first reads; a re-rating is recorded anew."""
    url = _fresh_database(database_url)
    ratings = pd.DataFrame({"user_id": [3] * 5, "movie_id": [30, 10, 20, 40, 5],
                            "rating": [4, 3, 5, 2, 4], "timestamp": [500, 500, 500, 100, 900]},
                           index=[7, 8, 9, 10, 2])
    asyncio.run(loader.load(url, DATA, ratings, progress=False))

    async def scenario(stub):
        before = await stub.GetUserHistory(pb.GetUserHistoryRequest(user_id=3), timeout=5)
        await stub.RecordRating(pb.RecordRatingRequest(user_id=3, movie_id=10, rating=4),
                                timeout=5)
        after = await stub.GetUserHistory(pb.GetUserHistoryRequest(user_id=3), timeout=5)
        return list(before.history.movie_ids), list(after.history.movie_ids)
    before, after = run(url, scenario)
    assert before == [5, 20, 10, 30, 40] == newest_first(ratings)["movie_id"].tolist()
    assert after == [10, 5, 20, 30, 40]


def test_record_rating_upserts_and_validates(catalog_url: str) -> None:
    async def scenario(stub):
        first = await stub.RecordRating(pb.RecordRatingRequest(user_id=7, movie_id=1, rating=2),
                                        timeout=5)
        second = await stub.RecordRating(pb.RecordRatingRequest(user_id=7, movie_id=1, rating=5),
                                         timeout=5)
        newcomer = await stub.RecordRating(pb.RecordRatingRequest(user_id=5000, movie_id=2,
                                                                  rating=4), timeout=5)
        history = await stub.GetUserHistory(pb.GetUserHistoryRequest(user_id=7, limit=1),
                                            timeout=5)
        bad = [await _code(stub.RecordRating(pb.RecordRatingRequest(user_id=7, movie_id=1,
                                                                     rating=r), timeout=5))
               for r in (0, 6)]
        unknown = await _code(stub.RecordRating(pb.RecordRatingRequest(
            user_id=7, movie_id=99_999, rating=3), timeout=5))
        return first, second, newcomer, history, bad, unknown
    first, second, newcomer, history, bad, unknown = run(catalog_url, scenario)
    assert (second.rating.rating, second.rating.movie_id) == (5, 1)
    assert second.rating.timestamp >= first.rating.timestamp
    assert list(history.history.movie_ids) == [1] and list(history.history.ratings) == [5]
    assert newcomer.rating.user_id == 5000
    assert all(code == grpc.StatusCode.INVALID_ARGUMENT and "rating" in text
               for code, text in bad)
    assert unknown[0] == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("method", "request_", "field"), [
    ("GetMovies", pb.GetMoviesRequest(movie_ids=[0]), "movie_ids"),
    ("GetMovies", pb.GetMoviesRequest(movie_ids=list(range(1, 1002))), "movie_ids"),
    ("SearchMovies", pb.SearchMoviesRequest(query="x" * 201), "query"),
    ("SearchMovies", pb.SearchMoviesRequest(limit=-1), "limit"),
    ("SearchMovies", pb.SearchMoviesRequest(limit=10_000), "limit"),
    ("SearchMovies", pb.SearchMoviesRequest(page_token="garbage!"), "page_token"),
    ("SearchMovies", pb.SearchMoviesRequest(years=common_pb2.YearRange(min_year=1990,
                                                                       max_year=1980)), "years"),
    ("ListPopular", pb.ListPopularRequest(limit=2_000_000), "limit"),
    ("GetUser", pb.GetUserRequest(user_id=-4), "user_id"),
    ("GetUserHistory", pb.GetUserHistoryRequest(user_id=1, min_rating=9), "min_rating"),
    ("RecordRating", pb.RecordRatingRequest(user_id=0, movie_id=1, rating=3), "user_id"),
])
def test_bad_input_is_invalid_argument_naming_the_field(catalog_url, method, request_,
                                                        field) -> None:
    async def scenario(stub):
        return await _code(getattr(stub, method)(request_, timeout=5))
    code, details = run(catalog_url, scenario)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field)


def test_sql_metacharacters_are_just_data(catalog_url: str) -> None:
    async def scenario(stub):
        search = await stub.SearchMovies(pb.SearchMoviesRequest(query=INJECTION), timeout=5)
        like = await stub.SearchMovies(pb.SearchMoviesRequest(query="%"), timeout=5)
        codes = []
        for call in (stub.SearchMovies(pb.SearchMoviesRequest(genres=[INJECTION]), timeout=5),
                     stub.ListPopular(pb.ListPopularRequest(genres=["x' OR '1'='1"]),
                                      timeout=5)):
            try:
                await call
            except grpc.aio.AioRpcError as exc:  # genres must be MovieLens genre names
                codes.append(exc.code())
        return search, like, codes
    search, like, codes = run(catalog_url, scenario)
    assert not like.movies and codes == [grpc.StatusCode.INVALID_ARGUMENT] * 2
    assert all("drop" not in m.movie.title.lower() for m in search.movies)
    with psycopg.connect(catalog_url) as conn:
        assert conn.execute("SELECT count(*) FROM movies").fetchone()[0] == len(DATA.movies)


def test_popularity_refresh_runs_on_one_replica_at_a_time(catalog_url: str) -> None:
    async def scenario():
        store = CatalogStore(catalog_url, min_size=1, max_size=2)
        await store.open()
        try:
            other = await psycopg.AsyncConnection.connect(catalog_url)
            async with other, other.transaction():   # another replica is refreshing
                await other.execute("SELECT pg_advisory_xact_lock(%s)", (POPULARITY_LOCK,))
                while_held = await store.refresh_popularity()
            return while_held, await store.refresh_popularity()
        finally:
            await store.close()
    assert asyncio.run(scenario()) == (False, True)


def test_loader_is_idempotent_and_atomic(database_url: str) -> None:
    url = _fresh_database(database_url)
    first = asyncio.run(loader.load(url, DATA, DATA.ratings, progress=False))
    second = asyncio.run(loader.load(url, DATA, DATA.ratings, progress=False))
    assert first == second == {"movies": 80, "users": 60, "ratings": len(DATA.ratings)}
    broken = DATA.ratings.copy()
    broken.loc[broken.index[-1], "movie_id"] = 77_777  # no such movie: the merge fails
    bigger = generate(90, 120, 12, seed=12)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        asyncio.run(loader.load(url, bigger, broken, progress=False))
    with psycopg.connect(url) as conn:
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608
                  for t in ("movies", "users", "ratings")]
        assert counts == [80, 60, len(DATA.ratings)]


def test_health_waits_for_database_and_survives_restart(tmp_path: Path) -> None:
    pg = LocalPostgres(tmp_path / "pg", durable=False)
    url = pg.url  # port 0 until started: the service must wait, NOT_SERVING

    async def scenario():
        pg_port_url = pg.start()
        server, channel, stub = await _serve(pg_port_url)
        try:
            await wait_serving(channel)
            await stub.ListGenres(pb.ListGenresRequest(), timeout=5)
            pg.stop(mode="immediate")
            start = time.monotonic()
            code, _ = await _code(stub.ListGenres(pb.ListGenresRequest(), timeout=1.5))
            elapsed = time.monotonic() - start
            await asyncio.sleep(0.5)
            health = health_pb2_grpc.HealthStub(channel)
            down = (await health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status
            pg.start()
            await wait_serving(channel)
            genres = await stub.ListGenres(pb.ListGenresRequest(), timeout=5)
            return code, elapsed, down, genres
        finally:
            await channel.close()
            await server.stop(0)
            pg.destroy()
    assert url.endswith("/movierec")
    code, elapsed, down, genres = asyncio.run(scenario())
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert elapsed < 2.5
    assert down == health_pb2.HealthCheckResponse.NOT_SERVING
    assert list(genres.genres) == []


def test_not_serving_until_database_is_reachable(tmp_path: Path) -> None:
    pg = LocalPostgres(tmp_path / "pg2", durable=False)

    async def scenario():
        pg_url = pg.start()
        pg.stop(mode="immediate")
        server, channel, _stub = await _serve(pg_url)
        try:
            health = health_pb2_grpc.HealthStub(channel)
            await asyncio.sleep(0.5)
            before = (await health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status
            pg.start()
            await wait_serving(channel)
            return before
        finally:
            await channel.close()
            await server.stop(0)
            pg.destroy()
    assert asyncio.run(scenario()) == health_pb2.HealthCheckResponse.NOT_SERVING


# --- connection pools: Prometheus metrics, and a read replica -----------------------

def _pool_value(name: str, pool: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(name, {"pool": pool})
    return 0.0 if value is None else value


def _scrape(port: int) -> dict[tuple[str, str], float]:
    """``/metrics`` of this process over HTTP (another thread than the pools' loop, as
    Prometheus reads it): the catalog pool samples by (name, pool)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(s.name, s.labels["pool"]): s.value
            for family in text_string_to_metric_families(text)
            if family.name.startswith("movierec_catalog_pool") for s in family.samples}


def test_a_saturated_pool_shows_in_its_metrics(catalog_url: str) -> None:
    """One connection, held by a query blocked on a lock taken outside: the other calls
    wait for it, and the scrape says so while they do; then the counters keep it."""
    metrics_port = metrics.start(0)

    async def scrape() -> dict[tuple[str, str], float]:
        return await asyncio.to_thread(_scrape, metrics_port)

    async def until(condition, what: str) -> dict[tuple[str, str], float]:
        for _ in range(100):
            seen = await scrape()
            if condition(seen):
                return seen
            await asyncio.sleep(0.05)
        raise AssertionError(f"{what}: {seen}")

    async def main():
        server, channel, stub = await _serve(catalog_url, pool_min=1, pool_max=1,
                                             call_timeout=10.0, statement_timeout_ms=10_000,
                                             health_interval=60.0)
        try:
            await wait_serving(channel)
            for _ in range(3):
                await stub.GetMovies(pb.GetMoviesRequest(movie_ids=[1]), timeout=5)
            idle = await until(lambda s: s[("movierec_catalog_pool_available", "primary")] == 1,
                               "the connection back in the pool")
            blocker = await psycopg.AsyncConnection.connect(catalog_url)
            async with blocker:
                await blocker.execute("BEGIN")
                await blocker.execute("LOCK TABLE movies IN ACCESS EXCLUSIVE MODE")
                calls = [asyncio.ensure_future(stub.GetMovies(
                    pb.GetMoviesRequest(movie_ids=[2]), timeout=10)) for _ in range(4)]
                busy = await until(
                    lambda s: s[("movierec_catalog_pool_requests_waiting", "primary")] == 3,
                    "three calls waiting for the one connection")
                # The queue's patience is the call's: this one gives up waiting.
                gave_up = await _code(stub.GetMovies(pb.GetMoviesRequest(movie_ids=[3]),
                                                     timeout=0.5))
                await blocker.execute("ROLLBACK")
            await asyncio.gather(*calls)
            after = await until(
                lambda s: s[("movierec_catalog_pool_requests_waiting", "primary")] == 0,
                "the queue drained")
            return idle, busy, gave_up, after
        finally:
            await channel.close()
            await server.stop(0)

    idle, busy, gave_up, after = asyncio.run(main())
    assert {pool for _, pool in idle} == {"primary"}   # no replica configured
    assert idle[("movierec_catalog_pool_size", "primary")] == 1
    assert idle[("movierec_catalog_pool_max", "primary")] == 1
    assert idle[("movierec_catalog_pool_requests_waiting", "primary")] == 0
    assert idle[("movierec_catalog_pool_requests_total", "primary")] >= 4  # + health probe
    assert busy[("movierec_catalog_pool_available", "primary")] == 0
    assert busy[("movierec_catalog_pool_size", "primary")] == 1
    assert gave_up[0] in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    queued = ("movierec_catalog_pool_requests_queued_total", "primary")
    assert after[queued] - idle[queued] >= 4   # the three calls and the one that gave up
    assert after[("movierec_catalog_pool_request_errors_total", "primary")] >= 1
    waited = ("movierec_catalog_pool_wait_seconds_total", "primary")
    assert after[waited] - idle[waited] > 0.5
    used = ("movierec_catalog_pool_usage_seconds_total", "primary")
    assert after[used] > idle[used]
    # The store is closed: its pool no longer shows.
    assert prometheus_client.REGISTRY.get_sample_value(
        "movierec_catalog_pool_size", {"pool": "primary"}) is None


#: Where each RPC reads with CATALOG_READ_DATABASE_URL set (docs/scale-serving.md).
ON_REPLICA = {"SearchMovies", "ListGenres", "ListPopular", "ListMovies"}


def test_reads_that_may_lag_go_to_the_replica_and_the_rest_to_the_primary(
        database_url: str) -> None:
    """The replica is a copy of the primary's database whose movie 1 has another title:
    each RPC's answer and the pools' request counters show where it read."""
    primary = _fresh_database(database_url)
    asyncio.run(loader.load(primary, DATA, DATA.ratings, progress=False))
    replica = f"{primary}_replica"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            psycopg.sql.Identifier(replica.rsplit("/", 1)[1]),
            psycopg.sql.Identifier(primary.rsplit("/", 1)[1])))
    with psycopg.connect(replica, autocommit=True) as conn:
        conn.execute("UPDATE movies SET title = 'Replicated Zebra' WHERE movie_id = 1")
    calls = {
        "GetMovies": lambda s: s.GetMovies(pb.GetMoviesRequest(movie_ids=[1]), timeout=5),
        "SearchMovies": lambda s: s.SearchMovies(pb.SearchMoviesRequest(query="zebra"),
                                                 timeout=5),
        "ListGenres": lambda s: s.ListGenres(pb.ListGenresRequest(), timeout=5),
        "ListPopular": lambda s: s.ListPopular(pb.ListPopularRequest(limit=3), timeout=5),
        "ListMovies": lambda s: s.ListMovies(pb.ListMoviesRequest(limit=5), timeout=5),
        "GetCatalogVersion": lambda s: s.GetCatalogVersion(pb.GetCatalogVersionRequest(),
                                                           timeout=5),
        "GetUser": lambda s: s.GetUser(pb.GetUserRequest(user_id=3), timeout=5),
        "RecordRating": lambda s: s.RecordRating(pb.RecordRatingRequest(
            user_id=3, movie_id=1, rating=1), timeout=5),
        "GetUserHistory": lambda s: s.GetUserHistory(pb.GetUserHistoryRequest(
            user_id=3, limit=1), timeout=5),
        "UpsertUser": lambda s: s.UpsertUser(pb.UpsertUserRequest(
            user_id=3, age=25, gender="F", occupation=2), timeout=5),
        "UpsertMovies": lambda s: s.UpsertMovies(pb.UpsertMoviesRequest(movies=[
            common_pb2.Movie(title="Only On The Primary", year=2001, genres=["Drama"])]),
            timeout=5),
        "DeleteUser": lambda s: s.DeleteUser(pb.DeleteUserRequest(user_id=4), timeout=5),
    }

    async def main():
        server, channel, stub = await _serve(primary, read_database_url=replica,
                                             health_interval=60.0)
        try:
            await wait_serving(channel)
            replies, used = {}, {}
            for name, call in calls.items():
                before = {p: _pool_value("movierec_catalog_pool_requests_total", p)
                          for p in ("primary", "replica")}
                replies[name] = await call(stub)
                used[name] = {p for p, n in before.items()
                              if _pool_value("movierec_catalog_pool_requests_total", p) > n}
            async with await psycopg.AsyncConnection.connect(database_url) as conn:
                cursor = await conn.execute(
                    "SELECT datname, application_name FROM pg_stat_activity "
                    "WHERE application_name LIKE 'movierec-catalog-%%'")
                sessions = set(await cursor.fetchall())
            return replies, used, sessions
        finally:
            await channel.close()
            await server.stop(0)

    replies, used, sessions = asyncio.run(main())
    assert used == {name: {"replica" if name in ON_REPLICA else "primary"} for name in calls}
    assert replies["GetMovies"].movies[0].title != "Replicated Zebra"           # primary
    assert [m.movie.movie_id for m in replies["SearchMovies"].movies] == [1]   # replica
    assert replies["ListMovies"].movies[0].title == "Replicated Zebra"         # replica
    assert list(replies["GetUserHistory"].history.movie_ids) == [1]  # reads its write
    assert {(url.rsplit("/", 1)[1], f"movierec-catalog-{pool}")
            for url, pool in ((primary, "primary"), (replica, "replica"))} <= sessions
    with psycopg.connect(replica) as conn:   # no write reached the replica
        assert conn.execute("SELECT count(*) FROM movies WHERE title = "
                            "'Only On The Primary'").fetchone()[0] == 0
    with psycopg.connect(primary) as conn:
        assert conn.execute("SELECT count(*) FROM movies WHERE title = "
                            "'Only On The Primary'").fetchone()[0] == 1


def test_the_replica_pool_refuses_writes(database_url: str) -> None:
    url = _fresh_database(database_url)

    async def main():
        store = CatalogStore(url, min_size=1, max_size=1, read_url=url)
        await store.open()
        try:
            assert set(store.pools) == {"primary", "replica"}
            async with store.connection(5, read=True) as conn:
                with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                    await conn.execute("CREATE TABLE nope (x int)")
        finally:
            await store.close()
    asyncio.run(main())
