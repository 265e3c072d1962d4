"""The stores movierec needs, from the environment or started locally.

``LocalStores`` resolves ``DATABASE_URL``, ``REDIS_URL`` and ``MILVUS_URI``: each one
that is set is used as it is; each one that is not gets a local server under
``root`` (PostgreSQL and Redis from the system, milvus-lite from the venv), stopped
again by :meth:`stop`. Only the stores named in ``want`` are considered.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from movierec.stack.local_milvus import LocalMilvus
from movierec.stack.local_postgres import LocalPostgres
from movierec.stack.local_redis import LocalRedis
from movierec.stack.process import runtime_root

log = logging.getLogger(__name__)
STORES = {"postgres": "DATABASE_URL", "redis": "REDIS_URL", "milvus": "MILVUS_URI"}


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
            already = isinstance(server, LocalPostgres | LocalMilvus) and server.running()
            self.addresses[env] = server.start()
            if not already:  # a server another process started is left to it
                self.started[store] = server
            log.info("started local %s", store, extra={"address": self.addresses[env]})
        return dict(self.addresses)

    def _make(self, store: str):
        if store == "postgres":
            return LocalPostgres(self.root / "postgres", durable=self.durable)
        if store == "redis":
            return LocalRedis(self.root / "redis")
        return LocalMilvus(self.root / "milvus")

    def stop(self) -> None:
        """Stop what this object started; non-durable PostgreSQL data is deleted too."""
        for store, server in reversed(list(self.started.items())):
            if isinstance(server, LocalPostgres) and not self.durable:
                server.destroy()
            else:
                server.stop()
            log.info("stopped local %s", store)
        self.started.clear()
