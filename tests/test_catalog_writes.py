"""The catalog's write API on a real PostgreSQL: UpsertMovies, UpsertUser, DeleteUser.

Ids are assigned above every existing one, a movie without an id is matched on (title,
year) case-insensitively, the same request twice changes nothing (not even the catalog
version), a bad item anywhere in a batch writes nothing, and a deleted user's ratings go
with them. The last test writes through a real gateway servicer over this catalog: the
movie is found by the gateway's SearchMovies and its snapshot holds it after a refresh.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager

import grpc
import psycopg
import pytest
from grpc_helpers import wait_serving

from movierec import limits
from movierec.apps.gateway.backends import Backends
from movierec.apps.gateway.cache import Cache
from movierec.apps.gateway.movies import MovieSnapshot
from movierec.apps.gateway.servicer import GatewayServicer
from movierec.catalog.v1 import catalog_pb2 as pb
from movierec.catalog.v1 import catalog_pb2_grpc
from movierec.common.v1 import common_pb2
from movierec.data.synthetic import generate
from movierec.gateway.v1 import gateway_pb2
from movierec.services.catalog import loader
from movierec.services.catalog.server import CatalogSettings, create_server

C = grpc.StatusCode
DATA = generate(30, 40, 8, seed=7)


def movie(title: str, year: int = 2001, genres: tuple[str, ...] = ("Drama",),
          movie_id: int = 0) -> common_pb2.Movie:
    return common_pb2.Movie(movie_id=movie_id, title=title, year=year, genres=genres)


@pytest.fixture
def catalog_url(database_url: str) -> str:
    """A fresh database per test, loaded with a small synthetic catalog."""
    name = f"w_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    url = database_url.rsplit("/", 1)[0] + "/" + name
    asyncio.run(loader.load(url, DATA, DATA.ratings, progress=False))
    return url


@asynccontextmanager
async def catalog(url: str):
    """A started catalog on ``url``: (stub, its address)."""
    config = CatalogSettings(database_url=url, metrics_port=-1, health_interval=0.2)
    server, port = await create_server(config, 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        await wait_serving(channel)
        yield catalog_pb2_grpc.CatalogStub(channel), f"127.0.0.1:{port}"
    finally:
        await channel.close()
        await server.stop(0)


def run(url: str, scenario):
    async def main():
        async with catalog(url) as (stub, _):
            return await scenario(stub)
    return asyncio.run(main())


async def code_of(call) -> tuple[C, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return C.OK, ""


def rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def tables(url: str) -> tuple[list[tuple], ...]:
    """Everything a write could change, including the catalog version."""
    return (rows(url, "SELECT movie_id, title, year, genres FROM movies ORDER BY 1"),
            rows(url, "SELECT * FROM users ORDER BY 1"),
            rows(url, "SELECT * FROM ratings ORDER BY 1, 2"),
            rows(url, "SELECT version FROM catalog_version"))


def test_ids_are_assigned_above_every_id_and_titles_match_case_insensitively(
        catalog_url: str) -> None:
    top = max(DATA.movies.movie_id)
    known = DATA.movies.iloc[3]
    batch = [movie("Brand New Film", 2024, ("Comedy", "Action")),
             movie(known.title.upper(), int(known.year), ("Western",)),
             movie("Explicit Id", 1999, movie_id=top + 500),
             movie("After The Explicit One", 0, ()),
             movie("brand new FILM", 2024, ("Comedy", "Action")),
             movie("Renamed", 1980, ("Horror",), movie_id=1)]

    async def scenario(stub):
        before = (await stub.GetCatalogVersion(pb.GetCatalogVersionRequest())).catalog_version
        reply = await stub.UpsertMovies(pb.UpsertMoviesRequest(movies=batch), timeout=5)
        after = (await stub.GetCatalogVersion(pb.GetCatalogVersionRequest())).catalog_version
        found = await stub.GetMovies(pb.GetMoviesRequest(movie_ids=[top + 1, 1]), timeout=5)
        return before, reply, after, found
    before, reply, after, found = run(catalog_url, scenario)
    ids = [m.movie_id for m in reply.movies]
    assert ids == [top + 1, known.movie_id, top + 500, top + 501, top + 1, 1]
    assert after > before
    assert list(reply.movies[0].genres) == ["Action", "Comedy"]   # sorted, as stored
    assert reply.movies[1].title == known.title.upper() and list(reply.movies[1].genres) == [
        "Western"]
    assert reply.movies[3].year == 0 and not reply.movies[3].genres
    assert [(m.title, m.year) for m in found.movies] == [("brand new FILM", 2024),
                                                         ("Renamed", 1980)]
    assert rows(catalog_url, "SELECT count(*) FROM movies WHERE lower(title) = "
                             "'brand new film'") == [(1,)]


def test_the_same_request_twice_changes_nothing_and_returns_the_same_ids(
        catalog_url: str) -> None:
    batch = pb.UpsertMoviesRequest(movies=[movie("Twice", 2010), movie("Again", 0, ("War",)),
                                           movie("Kept Id", 1990, movie_id=3)])

    async def scenario(stub):
        first = await stub.UpsertMovies(batch, timeout=5)
        state = tables(catalog_url)
        second = await stub.UpsertMovies(batch, timeout=5)
        return first, state, second
    first, state, second = run(catalog_url, scenario)
    assert [m.movie_id for m in first.movies] == [m.movie_id for m in second.movies]
    assert first == second
    assert tables(catalog_url) == state          # rows and catalog_version unchanged


def test_concurrent_writers_never_share_an_id_nor_duplicate_a_title(catalog_url: str) -> None:
    async def scenario(stub):
        same = await asyncio.gather(*(stub.UpsertMovies(pb.UpsertMoviesRequest(
            movies=[movie("Raced Title", 2020)]), timeout=10) for _ in range(6)))
        different = await asyncio.gather(*(stub.UpsertMovies(pb.UpsertMoviesRequest(
            movies=[movie(f"Racer {i}", 2020)]), timeout=10) for i in range(6)))
        users = await asyncio.gather(*(stub.UpsertUser(pb.UpsertUserRequest(
            age=30, gender="F", occupation=1), timeout=10) for _ in range(6)))
        return same, different, users
    same, different, users = run(catalog_url, scenario)
    assert len({r.movies[0].movie_id for r in same}) == 1
    assert rows(catalog_url, "SELECT count(*) FROM movies WHERE title = 'Raced Title'") == [(1,)]
    ids = {r.movies[0].title: r.movies[0].movie_id for r in different}
    assert len(set(ids.values())) == 6          # none overwrote another's new id
    assert dict(rows(catalog_url, "SELECT title, movie_id FROM movies WHERE title LIKE "
                                  "'Racer %'")) == ids
    assert len({r.user.user_id for r in users}) == 6


@pytest.mark.parametrize(("bad", "field"), [
    (movie("   "), "movies[1].title"),
    (movie("x" * (limits.MAX_TITLE + 1)), "movies[1].title"),
    (movie("Nul\x00Title"), "movies[1].title"),
    (movie("Genre", genres=("Drama", "Nope")), "movies[1].genres"),
    (movie("Genre", genres=("Drama",) * (limits.MAX_GENRES + 1)), "movies[1].genres"),
    (movie("Old", 1799), "movies[1].year"),
    (movie("Future", 2201), "movies[1].year"),
    (movie("Negative id", movie_id=-4), "movies[1].movie_id"),
    (movie("Huge id", movie_id=limits.MAX_ID + 1), "movies[1].movie_id"),
])
def test_a_bad_movie_anywhere_in_a_batch_writes_nothing(catalog_url: str, bad, field) -> None:
    state = tables(catalog_url)
    batch = pb.UpsertMoviesRequest(movies=[movie("Good One", 2000), bad, movie("Good Two")])

    async def scenario(stub):
        return await code_of(stub.UpsertMovies(batch, timeout=5))
    code, details = run(catalog_url, scenario)
    assert code == C.INVALID_ARGUMENT and details.startswith(field), details
    assert tables(catalog_url) == state


@pytest.mark.parametrize(("count", "prefix"), [(0, "movies: must not be empty"),
                                               (limits.MAX_UPSERT_MOVIES + 1, "movies: at most")])
def test_a_batch_is_bounded(catalog_url: str, count: int, prefix: str) -> None:
    state = tables(catalog_url)
    batch = pb.UpsertMoviesRequest(movies=[movie(f"M{i}") for i in range(count)])

    async def scenario(stub):
        return await code_of(stub.UpsertMovies(batch, timeout=5))
    code, details = run(catalog_url, scenario)
    assert code == C.INVALID_ARGUMENT and details.startswith(prefix), details
    assert tables(catalog_url) == state


def test_sign_up_gets_a_new_id_and_a_profile_update_keeps_it(catalog_url: str) -> None:
    async def scenario(stub):
        # a client-chosen large id (as RecordRating registers one): sign-ups go above it
        await stub.RecordRating(pb.RecordRatingRequest(user_id=1_500_000_000, movie_id=1,
                                                       rating=4), timeout=5)
        signed = await stub.UpsertUser(pb.UpsertUserRequest(age=30, gender="F",
                                                            occupation=4), timeout=5)
        updated = await stub.UpsertUser(pb.UpsertUserRequest(
            user_id=signed.user.user_id, age=57, gender="M", occupation=20), timeout=5)
        chosen = await stub.UpsertUser(pb.UpsertUserRequest(user_id=777, age=17, gender="F",
                                                            occupation=0), timeout=5)
        existing = await stub.UpsertUser(pb.UpsertUserRequest(user_id=2, age=18, gender="M",
                                                              occupation=7), timeout=5)
        history = await stub.GetUserHistory(pb.GetUserHistoryRequest(user_id=2), timeout=5)
        return signed, updated, chosen, existing, history
    signed, updated, chosen, existing, history = run(catalog_url, scenario)
    assert signed.created and signed.user.user_id == 1_500_000_001
    assert (signed.user.age, signed.user.gender, signed.user.occupation) == (25, "F", 4)
    assert not updated.created and updated.user.user_id == signed.user.user_id
    assert (updated.user.age, updated.user.gender, updated.user.occupation) == (56, "M", 20)
    assert chosen.created and (chosen.user.user_id, chosen.user.age) == (777, 1)
    assert not existing.created and (existing.user.age, existing.user.occupation) == (18, 7)
    assert len(history.history.movie_ids) == int((DATA.ratings.user_id == 2).sum())  # kept


@pytest.mark.parametrize(("request_", "field"), [
    (pb.UpsertUserRequest(age=0, gender="F", occupation=1), "age"),
    (pb.UpsertUserRequest(age=121, gender="F", occupation=1), "age"),
    (pb.UpsertUserRequest(age=30, gender="X", occupation=1), "gender"),
    (pb.UpsertUserRequest(age=30, gender="", occupation=1), "gender"),
    (pb.UpsertUserRequest(age=30, gender="f", occupation=1), "gender"),
    (pb.UpsertUserRequest(age=30, gender="M", occupation=21), "occupation"),
    (pb.UpsertUserRequest(age=30, gender="M", occupation=-1), "occupation"),
    (pb.UpsertUserRequest(user_id=-3, age=30, gender="M", occupation=1), "user_id"),
    (pb.UpsertUserRequest(user_id=2, age=30, gender="M", occupation=99), "occupation"),
])
def test_a_bad_profile_is_invalid_argument_and_writes_nothing(catalog_url: str, request_,
                                                              field) -> None:
    state = tables(catalog_url)

    async def scenario(stub):
        return await code_of(stub.UpsertUser(request_, timeout=5))
    code, details = run(catalog_url, scenario)
    assert code == C.INVALID_ARGUMENT and details.startswith(field), details
    assert tables(catalog_url) == state


def test_delete_user_cascades_to_ratings(catalog_url: str) -> None:
    rated = int((DATA.ratings.user_id == 3).sum())
    assert rated > 0

    async def scenario(stub):
        gone = await stub.DeleteUser(pb.DeleteUserRequest(user_id=3), timeout=5)
        history = await code_of(stub.GetUserHistory(pb.GetUserHistoryRequest(user_id=3),
                                                    timeout=5))
        again = await code_of(stub.DeleteUser(pb.DeleteUserRequest(user_id=3), timeout=5))
        bad = await code_of(stub.DeleteUser(pb.DeleteUserRequest(user_id=0), timeout=5))
        other = await stub.GetUserHistory(pb.GetUserHistoryRequest(user_id=4), timeout=5)
        return gone, history, again, bad, other
    gone, history, again, bad, other = run(catalog_url, scenario)
    assert (gone.user_id, gone.ratings_deleted) == (3, rated)
    assert history[0] == C.NOT_FOUND and again[0] == C.NOT_FOUND
    assert bad[0] == C.INVALID_ARGUMENT and bad[1].startswith("user_id")
    assert rows(catalog_url, "SELECT count(*) FROM ratings WHERE user_id = 3") == [(0,)]
    assert rows(catalog_url, "SELECT count(*) FROM users WHERE user_id = 3") == [(0,)]
    assert len(other.history.movie_ids) == int((DATA.ratings.user_id == 4).sum())


class Context:
    def time_remaining(self) -> float:
        return 5.0


class Versions:
    value = ""


class CatalogOnly(Backends):
    """The real catalog client; no model knows a movie (nothing to index)."""

    async def embed_movies(self, movies, deadline):
        return []


def test_an_upserted_movie_is_found_by_the_gateway_and_its_snapshot(catalog_url: str) -> None:
    async def scenario():
        async with catalog(catalog_url) as (_, address):
            backends = CatalogOnly("127.0.0.1:1", "127.0.0.1:1", address)
            cache = Cache("", 60, 0.5)
            snapshot = MovieSnapshot(backends, call_timeout=5.0)
            gateway = GatewayServicer(backends, cache, Versions(), 5.0, snapshot)
            try:
                await snapshot.refresh()
                loaded = dict(snapshot.movies)
                reply = await gateway.UpsertMovies(gateway_pb2.UpsertMoviesRequest(movies=[
                    movie("Zyzzyva Returns", 2031, ("Sci-Fi",))]), Context())
                found = await gateway.SearchMovies(gateway_pb2.SearchMoviesRequest(
                    query="zyzzyva"), Context())
                after = dict(snapshot.movies)     # UpsertMovies refreshed it already
                return loaded, reply, found, not await snapshot.refresh(), after
            finally:
                await backends.close()
                await cache.close()
    loaded, reply, found, moved, after = asyncio.run(scenario())
    new_id = reply.movies[0].movie_id
    assert new_id > max(loaded) and new_id not in loaded
    assert [(m.movie_id, m.title) for m in found.movies] == [(new_id, "Zyzzyva Returns")]
    assert moved and after[new_id].title == "Zyzzyva Returns"
    assert list(after[new_id].genres) == ["Sci-Fi"] and after[new_id].year == 2031
