"""``movierec load vectors``: publish a model artifact's vectors to Milvus without downtime.

Steps: create a fresh ``mr_<model>_<version>_<load id>`` collection, insert the
vectors in batches (Lite takes at most ~1000 rows per insert), build the index, load
the collection, verify the row count, point the registry at it (one atomic upsert),
wait for in-flight searches on the old collection to finish, then drop every other
collection of that model. Searches keep going to the old collection until the
registry switches, so none fail, even when the live version is loaded again.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException
from tqdm import tqdm

from movierec.data.source import load_dataset
from movierec.errors import DataError
from movierec.models.artifact import read_item_vectors, read_metadata
from movierec.services.retriever.milvus import (
    INDEX_PARAMS,
    REGISTRY,
    MilvusVectors,
    ModelCollection,
    check_model,
    collection_name,
    default_index,
)

BATCH = 1000
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemBatch:
    """Everything a collection stores, one row per movie."""

    ids: np.ndarray
    vectors: np.ndarray
    years: np.ndarray
    genres: list[list[str]]


def _create(client: MilvusClient, name: str, dim: int, index_type: str, count: int,
            timeout: float) -> str:
    """Create the collection with ``index_type`` (or FLAT where refused); the type used."""
    if client.has_collection(name, timeout=timeout):
        client.drop_collection(name, timeout=timeout)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("year", DataType.INT32)
    schema.add_field("genres", DataType.ARRAY, element_type=DataType.VARCHAR,
                     max_capacity=32, max_length=32)
    params = dict(INDEX_PARAMS[index_type])
    if index_type == "IVF_FLAT":
        params["nlist"] = int(min(65536, max(16, 4 * math.sqrt(count))))
    index = client.prepare_index_params()
    index.add_index("vector", index_type=index_type, metric_type="IP", params=params)
    try:
        client.create_collection(name, schema=schema, index_params=index, timeout=timeout)
    except MilvusException as exc:
        if index_type == "FLAT" or "only support" not in str(exc):
            raise
        log.warning("this Milvus (Lite) refuses %s; using exact FLAT search", index_type)
        if client.has_collection(name, timeout=timeout):
            client.drop_collection(name, timeout=timeout)
        return _create(client, name, dim, "FLAT", count, timeout)
    return index_type


def publish(store: MilvusVectors, model: str, version: str, items: ItemBatch,
            index_type: str | None = None, drain_seconds: float = 5.0,
            progress: bool = True) -> ModelCollection:
    """Load ``items`` as ``model``'s new live version and retire the old ones."""
    check_model(model)
    client, timeout = store.client, max(store.timeout, 60.0)
    store.ensure_registry()
    name = collection_name(model, version, uuid.uuid4().hex[:8])
    index_type = index_type or default_index(len(items.ids))
    index_type = _create(client, name, items.vectors.shape[1], index_type, len(items.ids),
                         timeout)
    for start in tqdm(range(0, len(items.ids), BATCH), desc=f"insert {model}",
                      disable=not progress):
        end = start + BATCH
        client.insert(name, [{"id": int(i), "vector": v.tolist(), "year": int(y), "genres": g}
                             for i, v, y, g in zip(items.ids[start:end], items.vectors[start:end],
                                                   items.years[start:end], items.genres[start:end],
                                                   strict=True)], timeout=timeout)
    client.flush(name, timeout=timeout)
    client.load_collection(name, timeout=timeout)
    count = client.query(name, filter="", output_fields=["count(*)"], timeout=timeout)
    stored = int(count[0]["count(*)"])
    if stored != len(items.ids):
        raise DataError(f"{name} holds {stored} rows, expected {len(items.ids)}")
    live = ModelCollection(model, version, name, int(items.vectors.shape[1]), stored, index_type)
    store.publish(live)
    time.sleep(drain_seconds)
    for other in client.list_collections(timeout=timeout):
        if other.startswith(f"mr_{model}_") and other != name and other != REGISTRY:
            client.drop_collection(other, timeout=timeout)
    return live


def items_from_artifact(path: Path, dataset: str | None, data_dir: Path | None) -> ItemBatch:
    """The artifact's vectors joined with each movie's year and genres."""
    ids, vectors = read_item_vectors(path)
    meta = read_metadata(path)
    data = load_dataset(dataset or meta.get("dataset", "ml-1m"), data_dir)
    movies = data.movies.set_index("movie_id").reindex(ids)
    years = movies["year"].fillna(0).astype(np.int32).to_numpy()
    genres = [list(g) if isinstance(g, tuple) else [] for g in movies["genres"]]
    return ItemBatch(ids.astype(np.int64), vectors.astype(np.float32), years, genres)
