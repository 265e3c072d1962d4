"""The gateway's answer cache on a real Redis: hits, and never a stale answer after a write.

The servicer runs in-process over an in-memory downstream whose ratings change when
``RecordRating`` is called; the cache is a real Redis from the local runtime, and at the
end a master with a replica behind a Redis Sentinel (killed: the failover is followed)
and a three-node Redis Cluster, each started by the test.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from pathlib import Path

import pytest
from gateway_fakes import FakeDownstream, rated
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from movierec.apps.gateway.cache import Cache
from movierec.apps.gateway.servicer import GatewayServicer
from movierec.catalog.v1 import catalog_pb2
from movierec.errors import ResourceExhausted
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.stack.process import find_binary, free_port, stop_process, wait_for_port


class Writable(FakeDownstream):
    """A downstream whose users' histories grow with RecordRating."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[int, list[tuple[int, int]]] = {7: [(3, 5)]}

    async def user(self, user_id, limit, deadline):
        await asyncio.sleep(random.random() / 1000)  # let calls interleave
        return catalog_pb2.User(user_id=user_id), rated(self.history.get(user_id, []))

    async def record_rating(self, user_id, movie_id, rating, deadline):
        await asyncio.sleep(random.random() / 1000)
        self.history.setdefault(user_id, []).append((movie_id, rating))
        return catalog_pb2.Rating(user_id=user_id, movie_id=movie_id, rating=rating,
                                  timestamp=2)


class Context:
    def time_remaining(self) -> float:
        return 2.0


class Versions:
    value = "fusion@1|pinsage@1"


def servicer(redis_url: str) -> tuple[GatewayServicer, Cache]:
    cache = Cache(redis_url, ttl=60, timeout=0.5, bump_retry_seconds=0.02)
    return GatewayServicer(Writable(), cache, Versions(), call_timeout=1.0), cache


async def _recommend(gateway: GatewayServicer, user_id: int = 7) -> pb.RecommendResponse:
    """The answer as a caller receives it (the servicer answers with its bytes)."""
    return pb.RecommendResponse.FromString(
        await gateway.Recommend(pb.RecommendRequest(user_id=user_id, top_k=5), Context()))


def test_repeated_requests_hit_the_cache(redis_url: str) -> None:
    async def scenario():
        gateway, cache = servicer(redis_url)
        try:
            first, second = await _recommend(gateway, 7), await _recommend(gateway, 7)
            return first, second
        finally:
            await cache.close()
    first, second = asyncio.run(scenario())
    assert not first.cached and second.cached
    assert [i.movie_id for i in first.items] == [i.movie_id for i in second.items]


def test_no_read_after_an_acknowledged_write_sees_the_old_answer(redis_url: str) -> None:
    async def reader(gateway, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await _recommend(gateway)

    async def writer(gateway) -> list[int]:
        stale = []
        for _ in range(15):
            top = (await _recommend(gateway)).items[0].movie_id
            await gateway.RecordRating(pb.RecordRatingRequest(user_id=7, movie_id=top,
                                                              rating=4), Context())
            after = await _recommend(gateway)
            stale += [top] if top in {i.movie_id for i in after.items} else []
        return stale

    async def scenario():
        gateway, cache = servicer(redis_url)
        stop = asyncio.Event()
        readers = [asyncio.ensure_future(reader(gateway, stop)) for _ in range(6)]
        try:
            return await writer(gateway)
        finally:
            stop.set()
            await asyncio.gather(*readers)
            await cache.close()
    assert asyncio.run(scenario()) == []


def test_a_write_whose_invalidation_fails_still_hides_the_old_answer(redis_url: str) -> None:
    async def scenario():
        gateway, cache = servicer(redis_url)
        try:
            before = await _recommend(gateway, 7)
            assert (await _recommend(gateway, 7)).cached
            bump = cache._bump

            async def broken(*args, **kwargs):
                raise RedisConnectionError("redis went away")
            cache._bump = broken
            top = before.items[0].movie_id
            await gateway.RecordRating(pb.RecordRatingRequest(user_id=7, movie_id=top,
                                                              rating=5), Context())
            cache.breaker.reset()   # Redis answers reads again at once
            during = await _recommend(gateway, 7)
            cache._bump = bump
            for _ in range(100):
                if not cache._pending:
                    break
                await asyncio.sleep(0.02)
            after = await _recommend(gateway, 7)
            return top, during, after, cache._pending
        finally:
            await cache.close()
    top, during, after, pending = asyncio.run(scenario())
    assert not during.cached and top not in {i.movie_id for i in during.items}
    assert not pending and top not in {i.movie_id for i in after.items}


@pytest.mark.parametrize("missing", ["expired", "evicted"])
def test_a_lost_generation_never_revives_old_answers(redis_url: str, missing: str) -> None:
    async def scenario():
        gateway, cache = servicer(redis_url)
        try:
            await _recommend(gateway, 9)
            await gateway.RecordRating(pb.RecordRatingRequest(user_id=9, movie_id=1, rating=5),
                                       Context())
            await cache.redis.delete("mr:v2:{u9}:gen")   # as if it expired or was evicted
            return await _recommend(gateway, 9)
        finally:
            await cache.close()
    answer = asyncio.run(scenario())
    assert not answer.cached and 1 not in {i.movie_id for i in answer.items}


def test_recommend_latency_is_recorded_per_query_kind_and_cache_outcome(redis_url) -> None:
    """movierec_gateway_recommend_seconds{kind, cache}: what the dashboard's per-kind
    panels read; a miss is a call that computed its answer."""
    from prometheus_client import REGISTRY

    def count(kind: str, cache: str) -> float:
        return REGISTRY.get_sample_value("movierec_gateway_recommend_seconds_count",
                                         {"kind": kind, "cache": cache}) or 0.0

    request = pb.RecommendRequest(next_for_user_id=7, top_k=3, genres=["Drama"])
    before = (count("next", "miss"), count("next", "hit"))

    async def twice():
        gateway, cache = servicer(redis_url)
        try:
            for _ in range(2):
                await gateway.Recommend(request, Context())
        finally:
            await cache.close()
    asyncio.run(twice())
    assert (count("next", "miss"), count("next", "hit")) == (before[0] + 1, before[1] + 1)


# --- Redis Sentinel and Redis Cluster, through redis-py's own clients ----------------

class RedisProcesses:
    """redis-server processes (servers and sentinels) on free loopback ports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[int, subprocess.Popen] = {}
        self.binary = find_binary("redis-server")
        if self.binary is None:
            pytest.skip("redis-server not found: `make system-deps`")

    def start(self, *args: str, sentinel: str = "") -> int:
        port = free_port()
        while "--cluster-enabled" in args and port + 10_000 > 65_535:   # + its bus port
            port = free_port()
        directory = self.root / str(port)
        directory.mkdir(parents=True)
        if sentinel:   # a sentinel rewrites its config file: it must be its own
            conf = directory / "sentinel.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {directory}\n{sentinel}")
            command = [self.binary, str(conf), "--sentinel"]
        else:
            command = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no", "--dir", str(directory), *args]
        command += ["--logfile", str(directory / "redis.log")]
        self.procs[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port("127.0.0.1", port, 20, self.procs[port], "redis-server")
        return port

    def kill(self, port: int) -> None:
        self.procs[port].kill()   # SIGKILL: no goodbye to the clients
        self.procs[port].wait(5)

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_process(proc)


def ask(port: int, *command: str) -> object:
    """One command to the server or sentinel on ``port`` (a blocking client)."""
    import redis

    with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as client:
        return client.execute_command(*command)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def redis_processes(tmp_path: Path):
    processes = RedisProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.stop()


def test_settings_choose_the_redis_topology() -> None:
    from movierec import settings as env
    from movierec.apps.gateway.server import GatewaySettings

    sentinel = env.load(GatewaySettings, {
        "REDIS_URL": "redis://:pw@master/2", "REDIS_SENTINELS": "10.0.0.1:26379, s2:26380",
        "REDIS_SENTINEL_MASTER": "cache"})
    client = sentinel.cache().redis
    assert client.connection_pool.service_name == "cache"
    assert [s.connection_pool.connection_kwargs["port"]
            for s in client.connection_pool.sentinel_manager.sentinels] == [26379, 26380]
    assert client.connection_pool.connection_kwargs["db"] == 2
    assert client.connection_pool.connection_kwargs["password"] == "pw"
    cluster = env.load(GatewaySettings, {"REDIS_URL": "redis://node:7000/0",
                                         "REDIS_CLUSTER": "true"})
    assert isinstance(cluster.cache().redis, RedisCluster)
    for bad in ({"REDIS_SENTINELS": "s1:26379"},                     # no REDIS_URL
                {"REDIS_URL": "redis://x", "REDIS_SENTINELS": "s1"},  # no port
                {"REDIS_URL": "redis://x", "REDIS_SENTINELS": "s1:1", "REDIS_CLUSTER": "1"}):
        with pytest.raises(env.SettingsError):
            env.load(GatewaySettings, bad)


def test_a_sentinel_failover_is_followed_and_fails_no_request(redis_processes) -> None:
    """A master, its replica and one sentinel: the cache finds the master through the
    sentinel; the master is killed; every request is still answered (uncached at
    worst), and once the sentinel has promoted the replica the cache hits again there."""
    master = redis_processes.start("--repl-diskless-sync-delay", "0")
    replica = redis_processes.start("--replicaof", "127.0.0.1", str(master))
    wait_for(lambda: ask(replica, "INFO", "replication")["master_link_status"] == "up", 20,
             "the replica in sync")
    sentinel = redis_processes.start(sentinel=(
        f"sentinel monitor movierec 127.0.0.1 {master} 1\n"
        "sentinel down-after-milliseconds movierec 500\n"
        "sentinel failover-timeout movierec 5000\n"))
    wait_for(lambda: len(ask(sentinel, "SENTINEL", "REPLICAS", "movierec")) == 1, 20,
             "the sentinel to see the replica")

    def master_port() -> int:
        return int(ask(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "movierec")[1])

    async def scenario():
        cache = Cache("redis://127.0.0.1/0", ttl=60, timeout=0.5, breaker_seconds=0.2,
                      bump_retry_seconds=0.02, sentinels=[("127.0.0.1", sentinel)],
                      sentinel_master="movierec")
        gateway = GatewayServicer(Writable(), cache, Versions(), call_timeout=1.0)
        try:
            first, second = await _recommend(gateway, 7), await _recommend(gateway, 7)
            on_master = ask(master, "DBSIZE")
            redis_processes.kill(master)
            answers, errors = 0, []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    reply = await _recommend(gateway, 7)
                except Exception as exc:  # noqa: BLE001 - what the test looks for
                    errors.append(repr(exc))
                    continue
                answers += 1
                if reply.cached and master_port() == replica:
                    break
                await asyncio.sleep(0.05)
            return first, second, on_master, answers, errors, reply
        finally:
            await cache.close()
    first, second, on_master, answers, errors, last = asyncio.run(scenario())
    assert not first.cached and second.cached and on_master >= 2  # generation + answer
    assert errors == [] and answers >= 1
    assert master_port() == replica and last.cached   # the new master serves the cache


def test_a_redis_cluster_holds_each_users_keys_on_one_node(redis_processes) -> None:
    """Three masters sharing the 16384 slots: the cache's scripts and the rate limiter
    run on whichever node holds a user's (or a client's) slot."""
    from movierec.apps.gateway.ratelimit import RateLimiter

    nodes = [redis_processes.start("--cluster-enabled", "yes", "--cluster-config-file",
                                   "nodes.conf", "--cluster-node-timeout", "2000")
             for _ in range(3)]
    created = subprocess.run(
        [str(Path(redis_processes.binary).with_name("redis-cli")), "--cluster", "create",
         *(f"127.0.0.1:{p}" for p in nodes), "--cluster-yes"],
        capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stdout + created.stderr
    wait_for(lambda: all("cluster_state:ok" in ask(p, "CLUSTER", "INFO") for p in nodes), 30,
             "the cluster to cover every slot")

    async def scenario():
        cache = Cache(f"redis://127.0.0.1:{nodes[0]}/0", ttl=60, timeout=0.5,
                      bump_retry_seconds=0.02, cluster=True)
        gateway = GatewayServicer(Writable(), cache, Versions(), call_timeout=1.0)
        limiter = RateLimiter(cache.redis, rate=1.0, burst=2)
        try:
            users = range(1, 13)
            first = [(await _recommend(gateway, u)).cached for u in users]
            second = [(await _recommend(gateway, u)).cached for u in users]
            await gateway.RecordRating(pb.RecordRatingRequest(user_id=1, movie_id=3,
                                                              rating=5), Context())
            after_write = (await _recommend(gateway, 1)).cached
            taken = []
            for _ in range(3):
                try:
                    await limiter.take("client-a")
                    taken.append(True)
                except ResourceExhausted:
                    taken.append(False)
            return first, second, after_write, taken
        finally:
            await cache.close()
    first, second, after_write, taken = asyncio.run(scenario())
    assert not any(first) and all(second) and not after_write
    assert taken == [True, True, False]
    holding = [ask(p, "DBSIZE") for p in nodes]
    assert sum(1 for n in holding if n) >= 2, holding   # the users spread over the nodes
