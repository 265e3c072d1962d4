"""The whole stack for end-to-end tests: trained synthetic models over real stores.

Models are trained on a small synthetic data set, the catalog and vectors are loaded
into real PostgreSQL and Milvus, and catalog, retriever, embedder and gateway run as
separate ``movierec serve`` processes, as ``make run`` starts them. Test modules use
``running_stack`` inside their own fixture (tests/test_e2e.py, tests/test_web_browser.py).
Models, catalog and vectors are prepared once per test session: a second stack (with
other settings, tests/test_security_stack.py) reuses them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from movierec import cli, registry
from movierec.data.source import load_dataset
from movierec.models import registry as registry_models
from movierec.models.artifact import latest
from movierec.services.catalog import loader
from movierec.services.retriever.loader import items_from_artifact, publish
from movierec.services.retriever.milvus import MilvusVectors
from movierec.stack.local_redis import LocalRedis
from movierec.stack.process import free_port, stop_process
from movierec.stack.up import GRPC_SERVICES, launch, wait_serving

DATASET = "synthetic-150x200x25-s5"
#: (database server URL, Milvus URI) -> (artifacts folder, loaded database URL)
_PREPARED: dict[tuple[str, str], tuple[Path, str]] = {}


@dataclass
class Stack:
    env: dict[str, str]
    procs: dict[str, object]
    redis: LocalRedis
    logs: Path

    @property
    def gateway(self) -> str:
        return f"127.0.0.1:{self.env['GATEWAY_PORT']}"

    def restart(self, name: str) -> None:
        service = registry.get(name)
        self.procs[name] = launch(service, self.env, self.logs)
        wait_serving(self.procs[name], name, int(self.env[service.port_env]), 60, self.env)

    def stop(self, name: str) -> None:
        stop_process(self.procs[name])


def _train(artifacts: Path, root: Path) -> None:
    common = ["--dataset", DATASET, "--artifacts", str(artifacts), "--no-progress"]
    assert cli.main(["train", "fusion", *common, "--max-epochs", "3",
                     "--checkpoint-dir", str(root / "ckpt-f")]) == 0
    assert cli.main(["train", "pinsage", *common, "--dim", "16", "--max-epochs", "3",
                     "--checkpoint-dir", str(root / "ckpt-p")]) == 0
    assert cli.main(["train", "sasrec", *common, "--dim", "16", "--max-len", "32",
                     "--max-epochs", "3", "--checkpoint-dir", str(root / "ckpt-s")]) == 0


def _database(base_url: str) -> str:
    name = f"e2e_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    return base_url.rsplit("/", 1)[0] + "/" + name


def _env(artifacts: Path, database: str, milvus_uri: str, redis_url: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": database, "MILVUS_URI": milvus_uri,
           "REDIS_URL": redis_url, "MOVIEREC_ARTIFACTS": str(artifacts),
           "GATEWAY_CALL_TIMEOUT": "1.0", "MOVIEREC_GRACE_SECONDS": "0.5",
           "WEB_METRICS_PORT": "-1"}
    for service in GRPC_SERVICES:
        port = str(free_port())
        env[service.port_env] = port
        env[service.addr_env] = f"127.0.0.1:{port}"
        env[service.metrics_env] = "-1"
    return env


def _prepare(root: Path, database_url: str, milvus_uri: str) -> tuple[Path, str]:
    """Train, load the catalog and publish the vectors, once per session and stores."""
    key = (database_url, milvus_uri)
    if key not in _PREPARED:
        _train(root / "artifacts", root)
        data = load_dataset(DATASET)
        database = _database(database_url)
        asyncio.run(loader.load(database, data, data.ratings, progress=False))
        store = MilvusVectors(milvus_uri, timeout=30)
        for model in registry_models.NAMES:
            path = latest(model, root / "artifacts")
            publish(store, model, path.name, items_from_artifact(path, DATASET, None),
                    drain_seconds=0, progress=False)
        store.close()
        _PREPARED[key] = (root / "artifacts", database)
    return _PREPARED[key]


@contextmanager
def running_stack(root: Path, database_url: str, milvus_uri: str,
                  configure: Callable[[dict[str, str], LocalRedis], None] | None = None
                  ) -> Iterator[Stack]:
    """Prepare (once) and start every service under ``root``; stop them all on exit.
    ``configure(env, redis)`` may change the settings (and the Redis) first."""
    artifacts, database = _prepare(root, database_url, milvus_uri)
    redis = LocalRedis(root / "redis")
    env = _env(artifacts, database, milvus_uri, redis.start())
    if configure is not None:
        configure(env, redis)
    running = Stack(env, {}, redis, root / "logs")
    try:
        for service in GRPC_SERVICES:
            running.restart(service.name)
        yield running
    finally:
        for proc in running.procs.values():
            stop_process(proc)
        redis.stop()
