"""Async face of the vector store for the servicer: caching, one retry, consistency, errors.

Searches (batched by :mod:`movierec.services.retriever.batcher`) and vector reads go
through pymilvus' asyncio client on the event loop; the rare
blocking calls (resolving a live pointer, health probes) run in worker threads. A model's
live collection is cached for ``registry_ttl`` seconds. A call that fails in a way a fresh
look can fix (the collection was dropped right after a swap, Milvus was briefly
unavailable) re-resolves the live collection and is retried once within the same
deadline. A query whose vector does not fit the live collection (another model version or
dimension) is checked against a fresh resolution before it is refused with
FAILED_PRECONDITION. Failures are translated by :mod:`movierec.services.retriever.failures`.
With tracing on, each search is a ``retriever.search`` span (which copy answered: memory or
Milvus) around the Milvus call's own span.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np

from movierec import tracing
from movierec.errors import FailedPrecondition, NotFound, Unavailable
from movierec.server.metrics import live_version
from movierec.services.retriever.batcher import BatchedSearch, Hits
from movierec.services.retriever.facts import Explained, HitFacts, Reading, explain
from movierec.services.retriever.failures import reraise
from movierec.services.retriever.memory import MemoryCollections
from movierec.services.retriever.milvus import Filters, MilvusVectors
from movierec.services.retriever.records import ModelCollection

T = TypeVar("T")
log = logging.getLogger(__name__)
Check = Callable[[ModelCollection], None]


class SearchEngine:
    """Searches one Milvus deployment on behalf of the gRPC servicer."""

    def __init__(self, store: MilvusVectors, registry_ttl: float = 1.0,
                 searcher: BatchedSearch | None = None, memory_below: int = 0) -> None:
        self.store = store
        self.searcher = searcher or BatchedSearch(store, max_batch=1)
        self.facts = HitFacts(store)
        self.memory = MemoryCollections(store, memory_below)
        self._retained: dict[tuple[str, str], ModelCollection] = {}
        self.registry_ttl = registry_ttl
        self._cache: dict[str, tuple[float, ModelCollection]] = {}

    async def _run(self, function: Callable[..., T], *args, timeout: float) -> T:
        """A blocking store call in a worker thread (the rare ones: pointers, health)."""
        return await self._await(asyncio.to_thread(function, *args), function.__qualname__,
                                 timeout)

    async def _await(self, call: Awaitable[T], name: str, timeout: float) -> T:
        """``call`` within ``timeout``. With :func:`asyncio.timeout`, not ``wait_for``:
        Python 3.11's ``wait_for`` returns the result, swallowing a cancellation, when the
        call completes in the loop step that cancels it, and a background loop
        (:meth:`keep_warm`, the health probe) then outlived the server's stop (a test hung
        for 300 s in CI)."""
        try:
            async with asyncio.timeout(timeout):
                return await call
        except TimeoutError as exc:
            log.warning("milvus did not answer in time", extra={"call": name})
            raise Unavailable("vector index did not answer in time") from exc
        except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it is
            log.warning("milvus call failed", extra={"call": name, "error": repr(exc)[:300]})
            reraise(exc)

    async def live(self, model: str, timeout: float, fresh: bool = False) -> ModelCollection:
        """The model's live collection: cached for ``registry_ttl``; when a routine refresh
        fails (an alias being altered can look missing for a moment on a server) the last
        pointer seen stays in use, since a swap drains it before it is dropped. ``fresh``
        (after a failed call) always asks Milvus."""
        cached = self._cache.get(model)
        if cached and not fresh and time.monotonic() - cached[0] < self.registry_ttl:
            return cached[1]
        try:
            live = await self._run(self.store.resolve, model, timeout=timeout)
        except (Unavailable, NotFound, FailedPrecondition):
            if cached is None or fresh:
                raise
            log.info("live pointer refresh failed, the last one stays", extra={"model": model})
            return cached[1]
        live_version("retriever", model, live.version, cached[1].version if cached else None)
        self._cache[model] = (time.monotonic(), live)
        return live

    async def _checked(self, model: str, timeout: float, check: Check | None,
                       fresh: bool = False) -> ModelCollection:
        live = await self.live(model, timeout, fresh)
        if check is None:
            return live
        try:
            check(live)
        except FailedPrecondition:  # perhaps a swap the cache has not seen yet
            live = await self.live(model, timeout, fresh=True)
            try:
                check(live)
            except FailedPrecondition:   # a query of the version before a promotion
                retained = await self.retained(model, getattr(check, "version", ""), timeout)
                if retained is None:
                    raise
                check(retained)
                return retained
        return live

    async def retained(self, model: str, version: str, timeout: float) -> ModelCollection | None:
        """A collection of ``model`` at ``version`` that is kept though not live (the
        previous version after a promotion, until it is retired); None when there is none."""
        if not version:
            return None
        found = self._retained.get((model, version))
        if found is None:
            records = await self._run(self.store.collections_of, model, timeout=timeout)
            self._retained.update({(model, r.version): r for r in records})
            found = self._retained.get((model, version))
        return found

    async def _with_refresh(self, model: str, timeout: float,
                            call: Callable[[ModelCollection, float], Awaitable[T]],
                            check: Check | None = None) -> tuple[T, ModelCollection]:
        deadline = time.monotonic() + timeout
        live = await self._checked(model, timeout, check)
        name = getattr(call, "__name__", "call")
        try:
            return await self._await(call(live, timeout), name, timeout), live
        except (Unavailable, FailedPrecondition):
            remaining = deadline - time.monotonic()
            if remaining <= 0.01:
                raise
            self._retained.clear()         # a retained collection may have been retired
            live = await self._checked(model, remaining, check, fresh=True)
            remaining = deadline - time.monotonic()
            return await self._await(call(live, remaining), name, remaining), live

    async def search(self, model: str, vector: Sequence[float], top_k: int,
                     filters: Filters, timeout: float,
                     check: Check | None = None) -> tuple[Hits, ModelCollection]:
        """The ``top_k`` hits of one query vector: from the collection's copy in memory
        when it is held there (:mod:`.memory`), else from Milvus (batched with concurrent
        searches of the same collection where :class:`BatchedSearch` can)."""
        live = await self._checked(model, timeout, check)
        copy = self.memory.get(live)
        attributes = {"movierec.model": live.model, "movierec.search.top_k": top_k,
                      "movierec.search.backend": "milvus" if copy is None else "memory"}
        with tracing.span("retriever.search", attributes):
            if copy is not None:
                return copy.search(vector, top_k, filters), live

            def search(col: ModelCollection, t: float):
                return self.searcher.search(col, vector, top_k, filters, t)
            return await self._with_refresh(model, timeout, search, check)

    async def explain(self, live: ModelCollection, hits: Hits, liked: frozenset[int],
                      reading: Reading | None, timeout: float) -> list[Explained]:
        """``hits`` with their reasons among ``liked`` and their readings (when asked)."""
        if not liked and reading is None:
            return [Explained(movie_id, score) for movie_id, score in hits]
        copy = self.memory.loaded.get(live.collection)
        ids = [i for i, _ in hits]
        facts = copy.facts(ids) if copy is not None else await self._await(
            self.facts.get(live, ids, timeout), "facts", timeout)
        return explain(hits, facts, liked, reading)

    async def stored(self, live: ModelCollection, ids: Sequence[int],
                     timeout: float) -> dict[int, np.ndarray]:
        """Stored vectors of ``ids`` in ``live`` (those it has), kept beside the searches."""
        copy = self.memory.loaded.get(live.collection)
        if copy is not None:
            return copy.stored_vectors(ids)
        facts = await self._await(self.facts.get(live, ids, timeout), "facts", timeout)
        return {i: fact.vector for i, fact in facts.items()}

    async def vectors(self, model: str, ids: Sequence[int],
                      timeout: float) -> tuple[dict[int, np.ndarray], ModelCollection]:
        live = await self.live(model, timeout)
        copy = self.memory.loaded.get(live.collection)
        if copy is not None:
            return copy.stored_vectors(ids), live

        def vectors(col: ModelCollection, t: float):
            return self.store.vectors(col, ids, t)
        return await self._with_refresh(model, timeout, vectors)

    async def upsert(self, model: str, version: str, rows: list[dict],
                     timeout: float) -> ModelCollection:
        """Write ``rows`` (id, vector, year, genres) into ``model``'s live collection when
        it is ``version``, then into its copy in memory: searches see them at once."""
        live = await self.live(model, timeout, fresh=True)
        if version != live.version:
            raise FailedPrecondition(f"model {model!r}: the rows are for version {version} "
                                     f"but version {live.version} is live")
        if any(len(r["vector"]) != live.dim for r in rows):
            raise FailedPrecondition(f"model {model!r}: vectors must have {live.dim} numbers")
        if live.reasons:
            rows = [{**r, "reasons": []} for r in rows]   # nothing is co-liked with it yet
        await self._run(self.store.upsert, live, rows, timeout=timeout)
        self.memory.upsert(live.collection, rows)
        self.facts.forget(live.collection, [r["id"] for r in rows])
        return live

    async def describe(self, model: str, timeout: float) -> ModelCollection:
        return await self.live(model, timeout, fresh=True)

    async def keep_warm(self, models: Sequence[str], interval: float, timeout: float) -> None:
        """Forever: look up each model's live collection, so that a small one is read into
        memory before searches ask for it (at start, and after a version swap)."""
        while True:
            for model in models:
                # not loaded yet, or Milvus away: the next round tries again
                with contextlib.suppress(Exception):
                    self.memory.get(await self.live(model, timeout))
            await asyncio.sleep(interval)

    async def ready(self, timeout: float) -> bool:
        """Whether Milvus answers (on Lite: and the registry exists, created if missing).

        A failed probe leaves the client alone: closing it would fail the searches in
        flight on it, and gRPC reconnects by itself once Milvus is back."""
        try:
            await self._run(self.store.ready, timeout=timeout)
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False
        return True
