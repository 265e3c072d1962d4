"""Movie vectors in Milvus: one collection per model version and a registry of live ones.

Collections are named ``mr_<model>_<version>_<load id>`` and hold the movie id (primary key),
the L2-normalized vector (metric IP), ``year`` and ``genres`` (an ARRAY of VARCHAR:
Milvus Lite has no bitwise filter operators). Milvus Lite 2.5 also has no aliases
(``create_alias`` answers UNIMPLEMENTED), so the model -> live collection pointer is a
row of the ``mr_registry`` collection, replaced by one upsert: readers see either the
old or the new version, never a half-loaded one. Lite does not support templated
filters (``filter_params``), so filters are built from validated values only: ids
are integers and genres are JSON-quoted strings from a restricted alphabet.

Every call carries a timeout: pymilvus otherwise retries some errors for minutes.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from movierec.errors import InvalidArgument, NotFound, Unavailable

REGISTRY = "mr_registry"
GENRE = re.compile(r"^[A-Za-z0-9 '&.-]{1,32}$")
MODEL = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
INDEX_PARAMS = {"FLAT": {}, "IVF_FLAT": {"nlist": 1024}, "HNSW": {"M": 16, "efConstruction": 200}}
SEARCH_PARAMS = {"FLAT": {}, "IVF_FLAT": {"nprobe": 32}, "HNSW": {"ef": 128}}


@dataclass(frozen=True)
class ModelCollection:
    """The live collection of one model, as the registry records it."""

    model: str
    version: str
    collection: str
    dim: int
    count: int
    index_type: str
    metric: str = "IP"


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


def collection_name(model: str, version: str, load_id: str) -> str:
    """``mr_<model>_<version>_<load id>``: every load gets a fresh collection, so loading
    the live version again never touches the collection searches are using."""
    return f"mr_{model}_{re.sub(r'[^A-Za-z0-9]', '_', version).lower()}_{load_id}"


def check_model(model: str) -> str:
    if not MODEL.match(model):
        raise InvalidArgument("model", "must be a lower-case model name like 'fusion'")
    return model


def default_index(count: int) -> str:
    """Exact search up to 100k vectors, HNSW beyond (see docs/milvus-embedded.md).

    Milvus Lite 2.5 refuses HNSW and its IVF_FLAT loses recall past ~90k rows (0.29
    recall@10 at 100k whatever nprobe), so on Lite the loader falls back to FLAT.
    """
    return "FLAT" if count <= 100_000 else "HNSW"


class MilvusVectors:
    """Blocking access to Milvus; the service runs it in worker threads."""

    def __init__(self, uri: str, timeout: float = 2.0) -> None:
        self.uri = uri
        self.timeout = timeout
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()
        self._registry_ready = False

    @property
    def client(self) -> MilvusClient:
        with self._lock:
            if self._client is None:
                try:
                    self._client = MilvusClient(uri=self.uri, timeout=self.timeout)
                except MilvusException as exc:
                    raise Unavailable("vector index unavailable") from exc
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            self._registry_ready = False

    def ensure_registry(self) -> None:
        """Create and load the registry unless this client already did (cheap probe then)."""
        if self._registry_ready and self.client.has_collection(REGISTRY, timeout=self.timeout):
            return
        if self.client.has_collection(REGISTRY, timeout=self.timeout):
            self.client.load_collection(REGISTRY, timeout=self.timeout)
            self._registry_ready = True
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("model", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("record", DataType.VARCHAR, max_length=1024)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="L2")
        self.client.create_collection(REGISTRY, schema=schema, index_params=index,
                                      timeout=self.timeout)
        self.client.load_collection(REGISTRY, timeout=self.timeout)
        self._registry_ready = True

    def resolve(self, model: str) -> ModelCollection:
        rows = self.client.query(REGISTRY, ids=[model], output_fields=["record"],
                                 timeout=self.timeout)
        if not rows:
            raise NotFound(f"model {model!r} has no vectors loaded")
        return ModelCollection(**json.loads(rows[0]["record"]))

    def publish(self, live: ModelCollection) -> None:
        record = json.dumps(live.__dict__)
        self.client.upsert(REGISTRY, [{"model": live.model, "record": record,
                                       "vector": [0.0, 0.0]}], timeout=self.timeout)

    def search(self, live: ModelCollection, vectors: Sequence[Sequence[float]], top_k: int,
               filters: Filters, timeout: float) -> list[list[tuple[int, float]]]:
        params = {"metric_type": live.metric, "params": SEARCH_PARAMS.get(live.index_type, {})}
        results = self.client.search(live.collection, data=[list(v) for v in vectors],
                                     filter=filters.expression(), limit=top_k,
                                     search_params=params, timeout=timeout)
        return [[(int(hit["id"]), float(hit["distance"])) for hit in hits] for hits in results]

    def vectors(self, live: ModelCollection, ids: Sequence[int],
                timeout: float) -> dict[int, np.ndarray]:
        rows = self.client.query(live.collection, ids=list(ids), output_fields=["vector"],
                                 timeout=timeout)
        return {int(r["id"]): np.asarray(r["vector"], dtype=np.float32) for r in rows}
