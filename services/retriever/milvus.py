"""Movie vectors in Milvus: one collection per loaded model version, one live pointer per model.

Collections are named ``mr_<model>_<version>_<load id>`` and hold the movie id (primary key),
the L2-normalized vector (metric IP), ``year`` and ``genres`` (an ARRAY of VARCHAR:
Milvus Lite has no bitwise filter operators). Each collection's description records
what it holds (:class:`ModelCollection` as JSON, with the loader's mark), so the loader
drops exactly the collections it created for a model and nothing else.

Which collection serves a model is the *live pointer*, with two backends behind one
interface (:mod:`movierec.services.retriever.pointers`): a Milvus **alias** ``mr_<model>``
on a Milvus server (``alter_alias`` swaps it atomically), or, on Milvus Lite 2.5 (which
answers UNIMPLEMENTED to aliases), the model's newest row in the ``mr_live`` collection.
Either way readers see the old or the new version, never a half-loaded one.

Searches and row reads are ``milvus.search`` / ``milvus.query`` spans when tracing is on
(:mod:`movierec.tracing`). Filters are built from validated values only (Lite has no
templated filters): ids are integers and genres are JSON-quoted strings from a
restricted alphabet. Every call carries a timeout: pymilvus otherwise retries some
errors for minutes.

A Milvus that wants credentials gets ``MILVUS_TOKEN`` (``user:password`` or an API key)
with every call, and one whose TLS certificate a private CA signed is verified with
``MILVUS_CA`` (an ``https://`` URI uses TLS either way): :class:`MilvusAccess`, read once
from the environment by every process that opens Milvus (the retriever takes its own
settings' copy). The token is a secret setting, so it is masked in the settings log and
redacted from log lines.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import prometheus_client
from pymilvus import AsyncMilvusClient, MilvusClient, MilvusException

from movierec import settings, tracing
from movierec.errors import InvalidArgument
from movierec.server.metrics import BUCKETS
from movierec.services.retriever.failures import reraise
from movierec.services.retriever.pointers import choose
from movierec.services.retriever.records import ModelCollection

#: the Milvus search call alone (a batch of query vectors), as the retriever waits for it
MILVUS_SEARCH = prometheus_client.Histogram(
    "movierec_retriever_milvus_search_seconds", "Milvus search calls, as the retriever waits",
    buckets=BUCKETS)

# pymilvus logs every failed call with a traceback (a load's first look for a live pointer
# that does not exist yet, too); callers here translate and log failures themselves.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

GENRE = re.compile(r"^[A-Za-z0-9 '&.-]{1,32}$")
#: Client keepalive that every server we talk to accepts (docs/milvus-server.md): a ping
#: at most every 5 minutes and only while calls are in flight. Milvus Lite's C++ gRPC
#: server answers more frequent pings (pymilvus' default is every 10 s, even when idle)
#: with GOAWAY "too_many_pings"; Milvus standalone (Go) allows one per 5 s. Every call
#: has its own deadline, so a dead connection is still noticed within a call timeout.
KEEPALIVE = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_timeout_ms": 20_000,
             "grpc.keepalive_permit_without_calls": False}


#: Reads see this process' own writes (a movie the retriever just inserted) and are not
#: held back otherwise: Milvus' "Session" level (the collections' default, "Bounded",
#: may leave a write unseen for seconds).
CONSISTENCY = "Session"


@dataclass(frozen=True)
class MilvusAccess:
    """Credentials and TLS trust for a Milvus server (defaults: none, the system's CAs)."""

    token: str = settings.setting(
        "MILVUS_TOKEN", "", secret=True,
        doc="Milvus credentials sent with every call: user:password or an API key "
            "(empty: none)")
    ca: str = settings.setting(
        "MILVUS_CA", "",
        doc="PEM CA bundle that signed Milvus' TLS certificate (an https:// MILVUS_URI; "
            "empty: the system's CAs)")

    def client_options(self, uri: str) -> dict[str, object]:
        """pymilvus keyword arguments for ``uri``; SettingsError for a CA without TLS."""
        options: dict[str, object] = {"token": self.token} if self.token else {}
        if self.ca:
            if not uri.startswith("https://"):
                raise settings.SettingsError("invalid settings: MILVUS_CA needs an https:// "
                                             "MILVUS_URI")
            options.update(secure=True, server_pem_path=self.ca)
        return options


@functools.cache
def milvus_access() -> MilvusAccess:
    """This process' :class:`MilvusAccess`, read from the environment once."""
    return settings.load(MilvusAccess)


@dataclass(frozen=True)
class Filters:
    exclude_ids: tuple[int, ...] = ()
    genres: tuple[str, ...] = ()
    min_year: int | None = None
    max_year: int | None = None

    def expression(self) -> str:
        """A Milvus boolean expression built only from validated values."""
        parts = []
        if self.exclude_ids:
            parts.append(f"id not in [{', '.join(str(int(i)) for i in self.exclude_ids)}]")
        if self.genres:
            for genre in self.genres:
                if not GENRE.match(genre):
                    raise InvalidArgument("genres", f"not a genre name: {genre[:40]!r}")
            parts.append(f"ARRAY_CONTAINS_ANY(genres, {json.dumps(list(self.genres))})")
        if self.min_year is not None:
            parts.append(f"year >= {int(self.min_year)}")
        if self.max_year is not None:
            parts.append(f"year <= {int(self.max_year)}")
        return " and ".join(parts)


def milvus_attributes(live: ModelCollection, operation: str, count: int,
                      limit: int) -> dict[str, object]:
    """The attributes of a Milvus call's span (pymilvus has no instrumentation)."""
    return {"db.system": "milvus", "db.operation.name": operation,
            "db.collection.name": live.collection, "movierec.model": live.model,
            "milvus.count": count, "milvus.limit": limit}


class MilvusVectors:
    """Access to one Milvus deployment: blocking calls for loads, pointers and probes, and
    asyncio ones (:meth:`search`, :meth:`vectors`) for the serving path, which
    then needs no worker thread per call. The async client belongs to the event loop
    that first uses it.

    ``search_ef`` is HNSW's search list size (raised to ``top_k`` when smaller, as
    Milvus requires). The live-pointer backend is chosen on first use.
    """

    def __init__(self, uri: str, timeout: float = 2.0, search_ef: int = 128,
                 access: MilvusAccess | None = None) -> None:
        self.uri = uri
        self.timeout = timeout
        self.search_ef = search_ef
        self.options = (access or milvus_access()).client_options(uri)
        self._client: MilvusClient | None = None
        self._async_client: AsyncMilvusClient | None = None
        self._pointer = None
        self._lock = threading.Lock()

    @property
    def client(self) -> MilvusClient:
        with self._lock:
            if self._client is None:
                try:
                    self._client = MilvusClient(uri=self.uri, timeout=self.timeout,
                                                grpc_options=KEEPALIVE, dedicated=True,
                                                **self.options)
                except MilvusException as exc:
                    reraise(exc)
            return self._client

    @property
    def pointer(self):
        """The live-pointer backend (:mod:`~movierec.services.retriever.pointers`)."""
        client = self.client
        with self._lock:
            if self._pointer is None:
                self._pointer = choose(client, self.timeout)
            return self._pointer

    @property
    def uses_aliases(self) -> bool:
        return self.pointer.kind == "alias"

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            self._pointer = None

    def ready(self) -> None:
        """Raise unless Milvus answers (and, on Lite, the registry exists: created here)."""
        self.pointer.ensure()

    def resolve(self, model: str) -> ModelCollection:
        return self.pointer.resolve(model)

    def publish(self, live: ModelCollection) -> None:
        """Point ``live.model`` at ``live.collection`` in one atomic step."""
        self.pointer.point(live)

    def describe(self, name: str, timeout: float | None = None) -> ModelCollection | None:
        """The loader's record of collection ``name`` (None if the loader did not make it)."""
        info = self.client.describe_collection(name, timeout=timeout or self.timeout)
        return ModelCollection.from_description(info["collection_name"],
                                                info.get("description", ""))

    def collections_of(self, model: str, timeout: float | None = None) -> list[ModelCollection]:
        """Every collection the loader created for exactly ``model`` (not ``model_v2``)."""
        prefix = f"mr_{model}_"
        found = []
        for name in self.client.list_collections(timeout=timeout or self.timeout):
            if name.startswith(prefix):
                record = self.describe(name, timeout)
                if record is not None and record.model == model:
                    found.append(record)
        return found

    @property
    def async_client(self) -> AsyncMilvusClient:
        if self._async_client is None:
            self._async_client = AsyncMilvusClient(uri=self.uri, timeout=self.timeout,
                                                   grpc_options=KEEPALIVE, dedicated=True,
                                                   **self.options)
        return self._async_client

    async def aclose(self) -> None:
        """Close the asyncio client (in the loop that used it) and the blocking one."""
        client, self._async_client = self._async_client, None
        if client is not None:
            await client.close()
        self.close()

    async def search(self, live: ModelCollection, vectors: Sequence[Sequence[float]],
                     top_k: int, filters: Filters,
                     timeout: float) -> list[list[tuple[int, float]]]:
        """(movie id, score) of the ``top_k`` best hits, per query vector."""
        params = {"metric_type": live.metric, "params": self.search_params(live, top_k)}
        with (tracing.span("milvus.search", milvus_attributes(live, "search", len(vectors),
                                                             top_k)), MILVUS_SEARCH.time()):
            results = await self.async_client.search(
                live.collection, data=[list(v) for v in vectors],
                filter=filters.expression(), limit=top_k, search_params=params,
                timeout=timeout, consistency_level=CONSISTENCY)
        return [list(zip(map(int, hits.ids), map(float, hits.distances), strict=True))
                for hits in results]

    def search_params(self, live: ModelCollection, top_k: int) -> dict:
        if live.index_type == "HNSW":
            return {"ef": max(self.search_ef, top_k)}
        if live.index_type == "IVF_FLAT":
            return {"nprobe": 32}
        return {}

    def upsert(self, live: ModelCollection, rows: Sequence[dict]) -> None:
        """Add or replace rows of the live collection (blocking)."""
        self.client.upsert(live.collection, list(rows), timeout=self.timeout)

    async def rows(self, live: ModelCollection, ids: Sequence[int], fields: Sequence[str],
                   timeout: float) -> dict[int, dict]:
        """The stored ``fields`` of ``ids``, by id (none asked: none read; pymilvus would
        turn an empty id list into an empty filter, which Milvus refuses without a limit)."""
        if not ids:
            return {}
        with tracing.span("milvus.query", milvus_attributes(live, "query", len(ids), 0)):
            rows = await self.async_client.query(live.collection, ids=list(ids),
                                                 output_fields=list(fields), timeout=timeout,
                                                 consistency_level=CONSISTENCY)
        return {int(r["id"]): r for r in rows}

    async def vectors(self, live: ModelCollection, ids: Sequence[int],
                      timeout: float) -> dict[int, np.ndarray]:
        """The stored vectors of ``ids``."""
        rows = await self.rows(live, ids, ["vector"], timeout)
        return {i: np.asarray(r["vector"], dtype=np.float32) for i, r in rows.items()}
