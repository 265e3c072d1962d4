"""The gateway's downstream services, each call with a deadline.

``Backends`` owns one channel per service. Reads are idempotent and retried with
backoff on UNAVAILABLE (within the deadline); writes are never retried. Every call's
deadline is the smaller of the configured per-call timeout and what is left of the
incoming request's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from movierec.catalog.v1 import catalog_pb2_grpc
from movierec.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from movierec.retriever.v1 import retriever_pb2_grpc
from movierec.server import client

log = logging.getLogger(__name__)


@dataclass
class Deadline:
    """What is left of one request's time budget."""

    end: float
    per_call: float

    @classmethod
    def start(cls, remaining: float | None, per_call: float) -> Deadline:
        budget = per_call * 4 if remaining is None else remaining
        return cls(time.monotonic() + budget, per_call)

    def timeout(self) -> float:
        return max(0.001, min(self.per_call, self.end - time.monotonic()))


@dataclass
class Backends:
    """Stubs of the embedder, retriever and catalog."""

    embedder_addr: str
    retriever_addr: str
    catalog_addr: str
    channels: list = field(default_factory=list)

    def __post_init__(self) -> None:
        chans = [client.channel(a) for a in (self.embedder_addr, self.retriever_addr,
                                              self.catalog_addr)]
        self.channels = chans
        self.embedder = embedder_pb2_grpc.EmbedderStub(chans[0])
        self.retriever = retriever_pb2_grpc.RetrieverStub(chans[1])
        self.catalog = catalog_pb2_grpc.CatalogStub(chans[2])

    async def read(self, method, request, deadline: Deadline, target: str):
        return await client.call(method, request, timeout=deadline.timeout(), target=target,
                                 idempotent=True)

    async def write(self, method, request, deadline: Deadline, target: str):
        return await client.call(method, request, timeout=deadline.timeout(), target=target)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.channels))


class ModelVersions:
    """The embedder's model versions, refreshed in the background (part of cache keys)."""

    def __init__(self, backends: Backends, interval: float) -> None:
        self.backends = backends
        self.interval = interval
        self.value = ""

    async def refresh(self) -> str:
        deadline = Deadline.start(None, 1.0)
        try:
            info = await self.backends.read(self.backends.embedder.GetModelInfo,
                                            embedder_pb2.GetModelInfoRequest(), deadline,
                                            "embedder")
            self.value = "|".join(sorted(f"{m.model}@{m.version}" for m in info.models))
        except Exception as exc:  # noqa: BLE001 - keep the last known versions
            log.warning("model versions unavailable: %s", type(exc).__name__)
        return self.value

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)
