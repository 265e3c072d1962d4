"""Faults survived and counted, all on loopback and bounded in time.

* Redis killed (SIGKILL) in the middle of a load on the gateway: no request fails.
* PostgreSQL restarted in the middle of a RecordRating load on the catalog: every
  rating the catalog acknowledged is in the table afterwards, with its value; the
  ones that failed failed with a retryable code, never INTERNAL.
(The loss of a downstream service during a request is tests/test_e2e.py's
``test_downstream_loss_is_unavailable_then_recovers``.)
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import grpc
import psycopg
from grpc_helpers import wait_serving
from stack_fixture import Stack

from movierec.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from movierec.common.v1 import common_pb2
from movierec.data.synthetic import generate
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.gateway.v1 import gateway_pb2_grpc
from movierec.services.catalog import loader
from movierec.services.catalog.server import CatalogSettings, create_server
from movierec.stack.local_postgres import LocalPostgres

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


async def _load(stub, requests, seconds: float, fault_at: float, fault) -> tuple[int, list]:
    """Send ``requests`` round-robin from 8 workers for ``seconds``; call ``fault`` once
    after ``fault_at`` seconds. Returns (answered, errors)."""
    pending = itertools.cycle(requests)
    answered, errors = 0, []
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal answered
        while time.monotonic() < end:
            try:
                await stub.Recommend(next(pending), timeout=2)
                answered += 1
            except grpc.aio.AioRpcError as exc:
                errors.append(exc.code())

    async def inject() -> None:
        await asyncio.sleep(fault_at)
        await asyncio.to_thread(fault)
    await asyncio.gather(inject(), *(worker() for _ in range(8)))
    return answered, errors


def test_killing_redis_under_load_fails_no_request(stack: Stack) -> None:
    profiles = [common_pb2.Profile(age=20 + i % 40, gender="MF"[i % 2], occupation=i % 21)
                for i in range(40)]
    requests = [pb.RecommendRequest(profile=p, top_k=5) for p in profiles] + [
        pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=[i, i + 1]), top_k=5)
        for i in range(1, 40)]

    def kill() -> None:
        stack.redis.proc.kill()   # SIGKILL: no goodbye to the clients
        stack.redis.proc.wait(5)

    async def scenario():
        async with grpc.aio.insecure_channel(stack.gateway) as channel:
            return await _load(gateway_pb2_grpc.GatewayStub(channel), requests, 4.0, 1.5, kill)
    try:
        answered, errors = asyncio.run(scenario())
    finally:
        stack.redis.proc = None
        stack.redis.start()
    assert answered > 50 and errors == []


def _catalog_with_data(pg: LocalPostgres) -> str:
    url = pg.start()
    data = generate(60, 80, 15, seed=21)
    asyncio.run(loader.load(url, data, data.ratings, progress=False))
    return url


def test_every_acknowledged_rating_survives_a_database_restart(tmp_path: Path) -> None:
    pg = LocalPostgres(tmp_path / "pg", durable=True)   # as `make run` runs it
    url = _catalog_with_data(pg)
    acknowledged: dict[tuple[int, int], int] = {}
    failures: list[grpc.StatusCode] = []
    acked_at: list[float] = []
    restart_window: list[float] = []

    async def writer(stub, pairs) -> None:
        for user, movie in pairs:
            rating = 1 + (user + movie) % 5
            try:
                reply = await stub.RecordRating(catalog_pb2.RecordRatingRequest(
                    user_id=user, movie_id=movie, rating=rating), timeout=2)
                acknowledged[(user, movie)] = reply.rating.rating
                acked_at.append(time.monotonic())
            except grpc.aio.AioRpcError as exc:
                failures.append(exc.code())
            await asyncio.sleep(0.005)

    def restart() -> None:
        restart_window.append(time.monotonic())
        pg.stop(mode="immediate")   # a crash, as far as PostgreSQL can tell
        time.sleep(0.5)
        pg.start()
        restart_window.append(time.monotonic())

    async def scenario() -> None:
        config = CatalogSettings(database_url=url, health_interval=0.2, refresh_seconds=0)
        server, port = await create_server(config, 0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await wait_serving(channel)
                stub = catalog_pb2_grpc.CatalogStub(channel)
                pairs = [(u, m) for u in range(1, 61) for m in range(1, 81) if (u + m) % 3 == 0]
                chunks = [pairs[i::4] for i in range(4)]

                async def fault() -> None:
                    await asyncio.sleep(0.8)
                    await asyncio.to_thread(restart)
                await asyncio.gather(fault(), *(writer(stub, c) for c in chunks))
        finally:
            await server.stop(0)
    try:
        asyncio.run(scenario())
        with psycopg.connect(url) as conn:
            stored = {(u, m): r for u, m, r in conn.execute(
                "SELECT user_id, movie_id, rating FROM ratings")}
    finally:
        pg.destroy()
    begun, done = restart_window
    assert sum(t < begun for t in acked_at) > 20 and sum(t > done for t in acked_at) > 20
    assert set(failures) <= RETRYABLE
    lost = {k: v for k, v in acknowledged.items() if stored.get(k) != v}
    assert lost == {}
