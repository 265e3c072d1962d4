"""The local runtime starts real servers, and environment addresses win over it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import redis
from pymilvus import MilvusClient

from movierec.stack.local_postgres import LocalPostgres
from movierec.stack.stores import LocalStores


def test_postgres_is_real_and_survives_restart(tmp_path: Path) -> None:
    pg = LocalPostgres(tmp_path / "pg", durable=True)
    url = pg.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (%s)", (42,))
            assert conn.execute("SHOW server_version").fetchone()[0].startswith("15")
        pg.stop()
        assert not pg.running()
        assert pg.start() == url  # a restart keeps its port while it is free
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == (42,)
    finally:
        pg.destroy()
    assert not pg.data.exists()


def test_redis_fixture_is_a_real_server(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("movierec:test", "1", ex=10)
    assert client.get("movierec:test") == b"1"
    assert client.info("server")["redis_version"]


def test_milvus_is_shared_by_two_processes(milvus_uri: str) -> None:
    client = MilvusClient(uri=milvus_uri)
    if client.has_collection("runtime_probe"):
        client.drop_collection("runtime_probe")
    client.create_collection("runtime_probe", dimension=2, metric_type="IP")
    client.insert("runtime_probe", [{"id": 7, "vector": [1.0, 0.0]}])
    other = (f"from pymilvus import MilvusClient; c = MilvusClient(uri={milvus_uri!r}); "
             "c.load_collection('runtime_probe'); "
             "print(c.search('runtime_probe', [[1.0, 0.0]], limit=1)[0][0]['id'])")
    out = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip().splitlines()[-1] == "7"
    client.drop_collection("runtime_probe")


def test_environment_addresses_are_used_as_given(tmp_path: Path) -> None:
    stores = LocalStores(root=tmp_path, environ={"REDIS_URL": "redis://db.example:6379/0"},
                         want=("redis",))
    assert stores.start() == {"REDIS_URL": "redis://db.example:6379/0"}
    assert stores.started == {}
    stores.stop()


def test_local_stores_start_and_stop_everything(tmp_path: Path) -> None:
    stores = LocalStores(root=tmp_path, durable=False, environ={})
    addresses = stores.start()
    try:
        assert set(addresses) == {"DATABASE_URL", "REDIS_URL", "MILVUS_URI"}
        assert redis.Redis.from_url(addresses["REDIS_URL"]).ping()
        with psycopg.connect(addresses["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stores.stop()
    assert stores.started == {}
