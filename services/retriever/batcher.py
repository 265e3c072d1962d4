"""Concurrent searches of one collection, sent to Milvus as one multi-vector search.

A small search costs a Milvus server mostly per-request work: on the MovieLens catalog
(3,883 vectors of 641 numbers) about 2.5 ms of server CPU per single-vector search, and
0.54 ms per vector when eight come in one request (docs/benchmarks.md). So searches
that arrive while one is in flight for the same collection wait for it and then go
together, up to ``max_batch`` query vectors per call. Nothing waits on a timer: a
search that finds nothing in flight is sent on the event loop's next turn, with
whatever else arrived in that turn, so a lone search is not delayed.

Excluded ids never reach Milvus as a filter: an ``id not in [...]`` expression is
parsed by Milvus on every search, which for a user's whole history (thousands of ids)
cost more than the search itself (docs/benchmarks.md). A search instead asks for
``top_k + len(exclude)`` hits and drops its excluded ids itself: on exact (FLAT) search,
which collections below ``RETRIEVER_EXACT_BELOW`` get, that is the same answer as the
filtered search (the limits keep ``top_k + len(exclude)`` under Milvus' 16,384).

Milvus applies one filter expression to every vector of a request, so only searches
without a genre or year filter and with at most ``max_exclude`` excluded ids (a liked
list, a short history) are batched; the batch asks for the largest ``top_k +
len(exclude)`` of its members. The others are searched alone.

A failed batch fails each of its members with the same error, which the engine then
translates and retries per request, as it does for a search sent alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

import prometheus_client

from movierec.services.retriever.milvus import Filters, MilvusVectors
from movierec.services.retriever.records import ModelCollection

#: Milvus' largest search limit (``topk``)
MAX_LIMIT = 16_384
Hits = list[tuple[int, float]]
QUERIES_PER_CALL = prometheus_client.Histogram(
    "movierec_retriever_queries_per_search", "Query vectors per Milvus search call",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128, 256))


def over_fetch(top_k: int, exclude: frozenset[int]) -> int:
    """How many hits to ask Milvus for so that ``top_k`` are left after the exclusions."""
    return min(MAX_LIMIT, top_k + len(exclude))


def kept(hits: Hits, exclude: frozenset[int], top_k: int) -> Hits:
    """The ``top_k`` best hits that are not excluded."""
    return [hit for hit in hits if hit[0] not in exclude][:top_k]


@dataclass
class _Pending:
    vector: Sequence[float]
    top_k: int
    exclude: frozenset[int]
    until: float                 # the loop time this search's caller gives up at
    future: asyncio.Future


@dataclass
class _Queue:
    live: ModelCollection
    waiting: list[_Pending]
    task: asyncio.Task | None = None


class BatchedSearch:
    """Searches of one Milvus deployment, batched per collection where that is exact."""

    def __init__(self, store: MilvusVectors, max_batch: int = 16, max_exclude: int = 512) -> None:
        self.store = store
        self.max_batch = max_batch
        self.max_exclude = max_exclude
        self._queues: dict[str, _Queue] = {}

    def batchable(self, filters: Filters) -> bool:
        return (self.max_batch > 1 and not filters.genres and filters.min_year is None
                and filters.max_year is None and len(filters.exclude_ids) <= self.max_exclude)

    async def search(self, live: ModelCollection, vector: Sequence[float], top_k: int,
                     filters: Filters, timeout: float) -> Hits:
        """(movie id, score) of the ``top_k`` best hits of ``vector`` under ``filters``."""
        if not self.batchable(filters):
            QUERIES_PER_CALL.observe(1)
            exclude = frozenset(filters.exclude_ids)
            hits = await self.store.search(live, [vector], over_fetch(top_k, exclude),
                                           replace(filters, exclude_ids=()), timeout)
            return kept(hits[0], exclude, top_k)
        loop = asyncio.get_running_loop()
        pending = _Pending(vector, top_k, frozenset(filters.exclude_ids), loop.time() + timeout,
                           loop.create_future())
        queue = self._queues.setdefault(live.collection, _Queue(live, []))
        queue.waiting.append(pending)
        if queue.task is None:
            queue.task = loop.create_task(self._drain(live.collection, queue))
        return await pending.future

    async def _drain(self, name: str, queue: _Queue) -> None:
        """Send the queue's searches, ``max_batch`` at a time, until none is left."""
        try:
            while queue.waiting:
                batch = queue.waiting[:self.max_batch]
                del queue.waiting[:self.max_batch]
                await self._send(queue.live, batch)
        finally:
            for pending in queue.waiting:  # only left when this task was cancelled
                pending.future.cancel()
            del self._queues[name]

    async def _send(self, live: ModelCollection, batch: list[_Pending]) -> None:
        batch = [p for p in batch if not p.future.done()]  # callers that gave up
        if not batch:
            return
        loop = asyncio.get_running_loop()
        limit = max(over_fetch(p.top_k, p.exclude) for p in batch)
        timeout = max(0.001, max(p.until for p in batch) - loop.time())
        QUERIES_PER_CALL.observe(len(batch))
        try:
            results = await self.store.search(live, [p.vector for p in batch], limit,
                                              Filters(), timeout)
        except asyncio.CancelledError:  # the server is stopping: nobody gets an answer
            for pending in batch:
                pending.future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every member sees the failure
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        for pending, hits in zip(batch, results, strict=False):
            if not pending.future.done():
                pending.future.set_result(kept(hits, pending.exclude, pending.top_k))
        for pending in batch[len(results):]:  # never seen: Milvus answers every query
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("Milvus answered fewer queries"))
