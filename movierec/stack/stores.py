"""The stores movierec needs, from the environment or started locally.

``LocalStores`` resolves ``DATABASE_URL``, ``REDIS_URL`` and ``MILVUS_URI``: each one
that is set is used as it is; each one that is not gets a local server under
``root`` (PostgreSQL and Redis from the system; Milvus from the venv: a Milvus 2.3
standalone server, or milvus-lite with ``MILVUS_MODE=lite``), stopped again by
:meth:`stop`. Only the stores named in ``want`` are considered. Durable stores (``movierec
up``, the load jobs) listen on ``MILVUS_PORT``; throwaway ones (tests, benchmarks) on free
ports, and their data is deleted when they stop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from movierec import settings
from movierec.stack.local_milvus import LocalMilvus
from movierec.stack.local_milvus_server import LocalMilvusServer
from movierec.stack.local_postgres import LocalPostgres
from movierec.stack.local_redis import LocalRedis
from movierec.stack.process import runtime_root

log = logging.getLogger(__name__)
STORES = {"postgres": "DATABASE_URL", "redis": "REDIS_URL", "milvus": "MILVUS_URI"}


@dataclass(frozen=True)
class LocalMilvusSettings:
    """The Milvus that ``movierec up``, the load jobs and the tests start when
    ``MILVUS_URI`` is unset (README, "Configuration")."""

    mode: str = settings.setting("MILVUS_MODE", "server", choices=("server", "lite"),
                                 doc="local Milvus started when MILVUS_URI is unset")
    port: int = settings.setting("MILVUS_PORT", 19530, minimum=1, maximum=65535,
                                 doc="loopback port of that local Milvus")


def local_milvus(root: Path, config: LocalMilvusSettings, port: int | None):
    """The local Milvus of ``config.mode``, its data under ``root``."""
    if config.mode == "lite":
        return LocalMilvus(root / "milvus", port)
    return LocalMilvusServer(root / "milvus-server", port)


def ports_to_check(environ: Mapping[str, str], root: Path | None = None) -> dict[str, int]:
    """``{VARIABLE: port}`` that ``movierec up`` will bind for local stores: Milvus' one
    host port, unless ``MILVUS_URI`` is set or our own server already listens there."""
    if environ.get("MILVUS_URI"):
        return {}
    config = settings.load(LocalMilvusSettings, environ)
    if local_milvus(root or runtime_root(), config, config.port).running():
        return {}
    return {"MILVUS_PORT": config.port}


@dataclass
class LocalStores:
    """Starts whatever stores the environment does not already point at."""

    root: Path = field(default_factory=runtime_root)
    durable: bool = True
    want: tuple[str, ...] = ("postgres", "redis", "milvus")
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    started: dict[str, object] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)

    def start(self) -> dict[str, str]:
        """Return ``{ENV_NAME: address}`` for every wanted store, starting local ones."""
        for store in self.want:
            env = STORES[store]
            if self.environ.get(env):
                self.addresses[env] = self.environ[env]
                continue
            server = self._make(store)
            already = not isinstance(server, LocalRedis) and server.running()
            if not already:  # a server another process started is left to it; this one
                self.started[store] = server   # is stopped even if its start fails
            try:
                self.addresses[env] = server.start()
            except BaseException:
                self.stop()
                raise
            log.info("started local %s", store, extra={"address": self.addresses[env]})
        return dict(self.addresses)

    def _make(self, store: str):
        if store == "postgres":
            return LocalPostgres(self.root / "postgres", durable=self.durable)
        if store == "redis":
            return LocalRedis(self.root / "redis")
        config = settings.load(LocalMilvusSettings, self.environ)
        return local_milvus(self.root, config, config.port if self.durable else None)

    def stop(self) -> None:
        """Stop what this object started; throwaway stores' data is deleted too."""
        for store, server in reversed(list(self.started.items())):
            if not self.durable and hasattr(server, "destroy"):
                server.destroy()
            else:
                server.stop()
            log.info("stopped local %s", store)
        self.started.clear()
