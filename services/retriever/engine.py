"""Async face of the vector store for the servicer: caching, one retry, consistency, errors.

pymilvus is blocking, so calls run in worker threads. A model's live collection is
cached for ``registry_ttl`` seconds. A call that fails in a way a fresh look can fix (the
collection was dropped right after a swap, Milvus was briefly unavailable) re-resolves
the live collection and is retried once within the same deadline. A query whose vector
does not fit the live collection (another model version or dimension) is checked against
a fresh resolution before it is refused with FAILED_PRECONDITION. Failures are
translated by :mod:`movierec.services.retriever.failures`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from movierec.errors import FailedPrecondition, Unavailable
from movierec.services.retriever.failures import reraise
from movierec.services.retriever.milvus import Filters, MilvusVectors
from movierec.services.retriever.records import ModelCollection

T = TypeVar("T")
log = logging.getLogger(__name__)
Check = Callable[[ModelCollection], None]


class SearchEngine:
    """Searches one Milvus deployment on behalf of the gRPC servicer."""

    def __init__(self, store: MilvusVectors, registry_ttl: float = 1.0) -> None:
        self.store = store
        self.registry_ttl = registry_ttl
        self._cache: dict[str, tuple[float, ModelCollection]] = {}

    async def _run(self, function: Callable[..., T], *args, timeout: float) -> T:
        try:
            return await asyncio.wait_for(asyncio.to_thread(function, *args), timeout)
        except TimeoutError as exc:
            log.warning("milvus did not answer in time", extra={"call": function.__qualname__})
            raise Unavailable("vector index did not answer in time") from exc
        except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it is
            log.warning("milvus call failed", extra={"call": function.__qualname__,
                                                     "error": repr(exc)[:300]})
            reraise(exc)

    async def live(self, model: str, timeout: float, fresh: bool = False) -> ModelCollection:
        cached = self._cache.get(model)
        if cached and not fresh and time.monotonic() - cached[0] < self.registry_ttl:
            return cached[1]
        live = await self._run(self.store.resolve, model, timeout=timeout)
        self._cache[model] = (time.monotonic(), live)
        return live

    async def _checked(self, model: str, timeout: float, check: Check | None
                       ) -> ModelCollection:
        live = await self.live(model, timeout)
        if check is None:
            return live
        try:
            check(live)
        except FailedPrecondition:  # perhaps a swap the cache has not seen yet
            live = await self.live(model, timeout, fresh=True)
            check(live)
        return live

    async def _with_refresh(self, model: str, timeout: float,
                            call: Callable[[ModelCollection, float], T],
                            check: Check | None = None) -> tuple[T, ModelCollection]:
        deadline = time.monotonic() + timeout
        live = await self._checked(model, timeout, check)
        try:
            return await self._run(call, live, timeout, timeout=timeout), live
        except (Unavailable, FailedPrecondition):
            remaining = deadline - time.monotonic()
            if remaining <= 0.01:
                raise
            live = await self._checked(model, remaining, check)
            remaining = deadline - time.monotonic()
            return await self._run(call, live, remaining, timeout=remaining), live

    async def search(self, model: str, vectors: Sequence[Sequence[float]], top_k: int,
                     filters: Filters, timeout: float,
                     check: Check | None = None) -> tuple[list, ModelCollection]:
        return await self._with_refresh(
            model, timeout, lambda col, t: self.store.search(col, vectors, top_k, filters, t),
            check)

    async def vectors(self, model: str, ids: Sequence[int],
                      timeout: float) -> tuple[dict[int, np.ndarray], ModelCollection]:
        return await self._with_refresh(model, timeout,
                                        lambda col, t: self.store.vectors(col, ids, t))

    async def describe(self, model: str, timeout: float) -> ModelCollection:
        return await self.live(model, timeout, fresh=True)

    async def ready(self, timeout: float) -> bool:
        """Whether Milvus answers (on Lite: and the registry exists, created if missing).

        A failed probe leaves the client alone: closing it would fail the searches in
        flight on it, and gRPC reconnects by itself once Milvus is back."""
        try:
            await self._run(self.store.ready, timeout=timeout)
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False
        return True
