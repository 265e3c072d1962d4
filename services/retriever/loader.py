"""``movierec load vectors``: publish a model artifact's vectors to Milvus without downtime.

Steps: refuse to replace a newer live version with an older one (unless forced); create
a fresh ``mr_<model>_<version>_<load id>`` collection whose description records what it
holds; insert the vectors in batches (Lite takes at most ~1000 rows per insert); build
the index (HNSW with the settings' parameters where the server has it, exact FLAT on
Milvus Lite) and wait for it; load the collection; verify the row count; switch the
model's live pointer to it in one atomic step (an alias on a server, a registry row
on Lite); wait for in-flight searches on the old collection to finish; then drop the
other collections the loader created for exactly this model. Searches keep going to
the old collection until the pointer switches, so none fail, even when the live
version is loaded again.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException
from tqdm import tqdm

from movierec.data.source import load_dataset
from movierec.errors import DataError, FailedPrecondition, NotFound
from movierec.models import reasons
from movierec.models.artifact import read_item_movies, read_item_vectors, read_metadata
from movierec.services.retriever.milvus import MilvusVectors
from movierec.services.retriever.records import (
    IndexSpec,
    ModelCollection,
    check_model,
    collection_name,
    version_key,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemBatch:
    """Everything a collection stores, one row per movie."""

    ids: np.ndarray
    vectors: np.ndarray
    years: np.ndarray
    genres: list[list[str]]
    reasons: np.ndarray | None = None   # [movies, k] co-liked movie ids, 0-padded

    def row(self, i: int) -> dict:
        """The ``i``-th movie as a Milvus row."""
        row = {"id": int(self.ids[i]), "vector": self.vectors[i].tolist(),
               "year": int(self.years[i]), "genres": self.genres[i]}
        if self.reasons is not None:
            row["reasons"] = [int(m) for m in self.reasons[i] if m > 0]
        return row


class StaleVersion(FailedPrecondition):
    """The live version is newer than the one being loaded."""


def _schema(record: ModelCollection):
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                        description=record.description())
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=record.dim)
    schema.add_field("year", DataType.INT32)
    schema.add_field("genres", DataType.ARRAY, element_type=DataType.VARCHAR,
                     max_capacity=32, max_length=32)
    if record.reasons:
        schema.add_field("reasons", DataType.ARRAY, element_type=DataType.INT64,
                         max_capacity=record.reasons)
    return schema


def create(client: MilvusClient, record: ModelCollection, index: IndexSpec,
           timeout: float) -> ModelCollection:
    """Create ``record.collection`` (not loaded yet) with ``index``, or FLAT where this
    Milvus refuses ``index`` (Lite 2.5 accepts only FLAT, IVF_FLAT and AUTOINDEX)."""
    client.create_collection(record.collection, schema=_schema(record), timeout=timeout)
    params = client.prepare_index_params()
    params.add_index("vector", index_type=index.kind, metric_type=record.metric,
                     params=index.params(record.count))
    try:
        client.create_index(record.collection, params, timeout=timeout)
    except MilvusException as exc:
        if index.kind == "FLAT" or "only support" not in str(exc):
            raise
        log.warning("this Milvus (Lite) refuses %s; using exact FLAT search", index.kind)
        flat = client.prepare_index_params()
        flat.add_index("vector", index_type="FLAT", metric_type=record.metric)
        client.create_index(record.collection, flat, timeout=timeout)
        return replace(record, index_type="FLAT")
    return record


def _insert(client: MilvusClient, name: str, items: ItemBatch, batch: int, timeout: float,
            progress: bool) -> None:
    for start in tqdm(range(0, len(items.ids), batch), desc=f"insert {name}",
                      disable=not progress):
        rows = range(start, min(start + batch, len(items.ids)))
        client.insert(name, [items.row(i) for i in rows], timeout=timeout)


def wait_indexed(client: MilvusClient, name: str, timeout: float) -> None:
    """Poll until the server has indexed every row (a server builds indexes asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.describe_index(name, "vector", timeout=timeout)
        if info.get("pending_index_rows", 0) == 0 and \
                info.get("indexed_rows", 0) >= info.get("total_rows", 0):
            return
        time.sleep(0.5)
    raise DataError(f"{name}: the index was not built within {timeout:.0f}s")


def check_newer(store: MilvusVectors, model: str, version: str, force: bool) -> None:
    """Refuse to replace a newer live version with an older one unless ``force``."""
    try:
        live = store.resolve(model)
    except NotFound:
        return
    if not force and version_key(version) < version_key(live.version):
        raise StaleVersion(f"{model} {live.version} is live and newer than {version}; "
                           "pass --force to replace it anyway")


def publish(store: MilvusVectors, model: str, version: str, items: ItemBatch,
            index: IndexSpec | None = None, drain_seconds: float = 5.0,
            progress: bool = True, force: bool = False,
            timings: dict[str, float] | None = None,
            keep_previous: bool = True) -> ModelCollection:
    """Load ``items`` as ``model``'s new live version and retire its other collections,
    except (``keep_previous``) the one live until now: queries of that version keep being
    answered while the embedders switch to the new one, and ``movierec rollback`` can
    make it live again at once.

    ``timings``, when given, receives the seconds each step took (insert, flush, index,
    load)."""
    check_model(model)
    client, timeout = store.client, max(store.timeout, 60.0)
    store.ready()
    check_newer(store, model, version, force)
    index = (index or IndexSpec()).for_count(len(items.ids))
    name = collection_name(model, version, uuid.uuid4().hex[:8])
    reasons = 0 if items.reasons is None else max(1, int(items.reasons.shape[1]))
    record = create(client, ModelCollection(model, version, name, int(items.vectors.shape[1]),
                                            len(items.ids), index.kind, reasons=reasons),
                    index, timeout)
    server = store.uses_aliases
    clock = _Clock(timings)
    _insert(client, name, items, 20_000 if server else 1000, timeout, progress)
    clock.lap("insert_s")
    client.flush(name, timeout=timeout)
    clock.lap("flush_s")
    if server:
        wait_indexed(client, name, max(timeout, 3600.0))
    clock.lap("index_s")
    client.load_collection(name, timeout=max(timeout, 600.0))
    clock.lap("load_s")
    count = client.query(name, filter="", output_fields=["count(*)"], timeout=timeout,
                         consistency_level="Strong")
    stored = int(count[0]["count(*)"])
    if stored != len(items.ids):
        raise DataError(f"{name} holds {stored} rows, expected {len(items.ids)}")
    previous = current(store, model) if keep_previous else None
    store.publish(record)
    time.sleep(drain_seconds)
    kept = {name, previous.collection if previous is not None else name}
    for other in store.collections_of(model, timeout):
        if other.collection not in kept:
            client.drop_collection(other.collection, timeout=timeout)
    return record


def current(store: MilvusVectors, model: str) -> ModelCollection | None:
    """``model``'s live collection, None when it has none."""
    try:
        return store.resolve(model)
    except NotFound:
        return None


class _Clock:
    """Seconds between laps, written into ``into`` (when there is one)."""

    def __init__(self, into: dict[str, float] | None) -> None:
        self.into = into
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.into is not None:
            self.into[name] = round(now - self.last, 2)
        self.last = now


def items_from_artifact(path: Path, dataset: str | None, data_dir: Path | None) -> ItemBatch:
    """The artifact's vectors joined with each movie's year and genres: from the artifact
    itself (``item_movies.json``) unless a data set is named, else from its data set."""
    ids, vectors = read_item_vectors(path)
    stored = read_item_movies(path) if dataset is None else None
    if stored is not None:
        years, genres = stored
    else:
        data = load_dataset(dataset or read_metadata(path).get("dataset", "ml-1m"), data_dir)
        movies = data.movies.set_index("movie_id").reindex(ids)
        years = movies["year"].fillna(0).astype(np.int32).to_numpy()
        genres = [list(g) if isinstance(g, tuple) else [] for g in movies["genres"]]
    return ItemBatch(ids.astype(np.int64), vectors.astype(np.float32), years, genres,
                     reasons.load(path))
