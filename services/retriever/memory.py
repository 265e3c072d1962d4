"""Small live collections held in memory and searched exactly, beside Milvus.

Milvus stays the system of record of every model version's vectors and the search
engine for catalogs of any size, but a search of a small collection pays it a round
trip and ~2.4 ms of server CPU (docs/benchmarks.md) for what a 3,883 x 641 matrix-vector
product does in ~0.2 ms. So a live collection with at most ``max_count`` vectors
(``RETRIEVER_MEMORY_BELOW``) is read from Milvus once, in the background, when a search
first meets it (ids, vectors, years, genres and co-liked rows), and from then on
searched here: the inner product with every vector, the exclusions, genre and year
filters applied as Milvus applies them, the ``top_k`` best. That is the exact (FLAT)
search Milvus runs on such collections, so the answers are the same. Until the copy is
loaded, and for larger collections, searches go to Milvus. A new live collection (a
version swap) is a new copy; the one before it is kept (queries of the previous version
while the embedders switch over) and older ones are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import prometheus_client

from movierec.services.retriever.facts import Fact
from movierec.services.retriever.milvus import Filters, MilvusVectors
from movierec.services.retriever.records import ModelCollection

log = logging.getLogger(__name__)
Hits = list[tuple[int, float]]
MEMORY_SEARCHES = prometheus_client.Counter(
    "movierec_retriever_memory_searches_total",
    "Searches answered from a collection held in memory instead of Milvus")
RETRY_SECONDS = 30.0
KEEP = 2   # copies per model: the live version and the previous (a promotion's switch-over)


@dataclass(frozen=True)
class MemoryCollection:
    """One live collection's rows, for exact search."""

    collection: str
    ids: np.ndarray              # int64 (n,)
    vectors: np.ndarray          # float32 (n, dim)
    years: np.ndarray            # int64 (n,)
    genres: np.ndarray           # bool (n, len(genre_names))
    genre_names: tuple[str, ...]
    reasons: tuple[tuple[int, ...], ...]
    rows: dict[int, int]

    @classmethod
    def of(cls, collection: str, rows: Sequence[dict]) -> MemoryCollection:
        rows = sorted(rows, key=lambda r: int(r["id"]))
        names = tuple(sorted({g for r in rows for g in (r.get("genres") or ())}))
        column = {g: i for i, g in enumerate(names)}
        genres = np.zeros((len(rows), len(names)), dtype=bool)
        for i, row in enumerate(rows):
            genres[i, [column[g] for g in row.get("genres") or ()]] = True
        ids = np.asarray([int(r["id"]) for r in rows], dtype=np.int64)
        return cls(collection, ids,
                   np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), -1),
                   np.asarray([int(r.get("year") or 0) for r in rows], dtype=np.int64), genres,
                   names, tuple(tuple(int(m) for m in r.get("reasons") or ()) for r in rows),
                   {int(m): i for i, m in enumerate(ids.tolist())})

    def allowed(self, filters: Filters) -> np.ndarray:
        """The rows ``filters`` keep, as Milvus' filter expression would."""
        keep = np.ones(len(self.ids), dtype=bool)
        excluded = [self.rows[i] for i in filters.exclude_ids if i in self.rows]
        keep[excluded] = False
        if filters.genres:
            columns = [self.genre_names.index(g) for g in filters.genres if g in self.genre_names]
            keep &= self.genres[:, columns].any(axis=1) if columns else False
        if filters.min_year is not None:
            keep &= self.years >= filters.min_year
        if filters.max_year is not None:
            keep &= self.years <= filters.max_year
        return keep

    def search(self, vector: Sequence[float], top_k: int, filters: Filters) -> Hits:
        """The ``top_k`` best rows by inner product with ``vector``, under ``filters``."""
        scores = self.vectors @ np.asarray(vector, dtype=np.float32)
        scores[~self.allowed(filters)] = -np.inf
        count = min(top_k, int(np.isfinite(scores).sum()))
        if count == 0:
            return []
        best = np.argpartition(-scores, count - 1)[:count]
        best = best[np.lexsort((self.ids[best], -scores[best]))]
        MEMORY_SEARCHES.inc()
        return list(zip(self.ids[best].tolist(), scores[best].tolist(), strict=True))

    def rows_as_stored(self) -> list[dict]:
        return [{"id": int(m), "vector": self.vectors[i], "year": int(self.years[i]),
                 "genres": [g for g, on in zip(self.genre_names, self.genres[i], strict=True)
                            if on], "reasons": self.reasons[i]}
                for i, m in enumerate(self.ids.tolist())]

    def updated(self, rows: Sequence[dict]) -> MemoryCollection:
        """A copy with ``rows`` added, or replacing the rows of their ids."""
        new = {int(r["id"]) for r in rows}
        kept = [r for r in self.rows_as_stored() if r["id"] not in new]
        return MemoryCollection.of(self.collection, kept + list(rows))

    def facts(self, ids: Sequence[int]) -> dict[int, Fact]:
        return {i: Fact(self.vectors[self.rows[i]], self.reasons[self.rows[i]])
                for i in ids if i in self.rows}

    def stored_vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        return {i: self.vectors[self.rows[i]] for i in ids if i in self.rows}


class MemoryCollections:
    """The in-memory copies of small live collections, loaded in the background."""

    def __init__(self, store: MilvusVectors, max_count: int, batch: int = 2000) -> None:
        self.store = store
        self.max_count = max_count
        self.batch = batch
        self.loaded: dict[str, MemoryCollection] = {}     # collection -> copy
        self._by_model: dict[str, list[str]] = {}         # model -> its copies, newest first
        self._tasks: dict[str, asyncio.Task] = {}
        self._failed: dict[str, float] = {}
        self._pending: dict[str, list[dict]] = {}   # rows written while a copy loads

    def get(self, live: ModelCollection) -> MemoryCollection | None:
        """The copy of ``live`` when loaded; otherwise None, and a load begins (once) for
        a collection small enough."""
        copy = self.loaded.get(live.collection)
        if copy is not None or not 0 < live.count <= self.max_count:
            return copy
        if live.collection not in self._tasks and \
                time.monotonic() >= self._failed.get(live.collection, 0.0):
            self._tasks[live.collection] = asyncio.get_running_loop().create_task(
                self._load(live))
        return None

    def _read(self, live: ModelCollection) -> list[dict]:
        fields = ["id", "vector", "year", "genres", *(["reasons"] if live.reasons else [])]
        iterator = self.store.client.query_iterator(live.collection, batch_size=self.batch,
                                                    output_fields=fields,
                                                    timeout=max(self.store.timeout, 60.0))
        rows = []
        try:
            while page := iterator.next():
                rows.extend(page)
        finally:
            iterator.close()
        return rows

    async def _load(self, live: ModelCollection) -> None:
        started = time.perf_counter()
        try:
            rows = await asyncio.to_thread(self._read, live)
            copy = await asyncio.to_thread(MemoryCollection.of, live.collection, rows)
            written = self._pending.pop(live.collection, [])
            if written:            # upserted while the rows were read: perhaps not in them
                copy = copy.updated(written)
            if len(copy.ids) < live.count:   # movies may have been added since the load
                raise ValueError(f"read {len(copy.ids)} rows of {live.count}")
        except Exception as exc:  # noqa: BLE001 - Milvus keeps answering; retried later
            log.warning("could not hold %s in memory (%s); searching it in Milvus",
                        live.collection, repr(exc)[:200])
            self._failed[live.collection] = time.monotonic() + RETRY_SECONDS
            return
        finally:
            self._tasks.pop(live.collection, None)
            self._pending.pop(live.collection, None)
        self.loaded[live.collection] = copy
        kept = [live.collection, *(c for c in self._by_model.get(live.model, ())
                                   if c != live.collection)]
        for retired in kept[KEEP:]:        # the live version and the one before it
            self.loaded.pop(retired, None)
        self._by_model[live.model] = kept[:KEEP]
        log.info("collection held in memory", extra={
            "collection": live.collection, "rows": len(copy.ids),
            "seconds": round(time.perf_counter() - started, 2)})

    def upsert(self, collection: str, rows: Sequence[dict]) -> None:
        """Apply rows just written to Milvus to the copy of ``collection``: the one held,
        or the one being read now (which may have been read before the write)."""
        copy = self.loaded.get(collection)
        if copy is not None:
            self.loaded[collection] = copy.updated(rows)
        elif collection in self._tasks:
            self._pending.setdefault(collection, []).extend(rows)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
