"""Async face of the vector store for the servicer: caching, retries, error mapping.

pymilvus is blocking, so calls run in worker threads. The registry lookup (model ->
live collection) is cached for ``registry_ttl`` seconds; a failed search refreshes it
and is retried once, which covers a collection dropped right after a swap. Milvus
errors that remain become :class:`~movierec.errors.Unavailable`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from pymilvus import MilvusException

from movierec.errors import NotFound, Unavailable
from movierec.services.retriever.milvus import Filters, MilvusVectors, ModelCollection

T = TypeVar("T")


class SearchEngine:
    """Searches one Milvus deployment on behalf of the gRPC servicer."""

    def __init__(self, store: MilvusVectors, registry_ttl: float = 1.0) -> None:
        self.store = store
        self.registry_ttl = registry_ttl
        self._cache: dict[str, tuple[float, ModelCollection]] = {}

    async def _run(self, function: Callable[..., T], *args, timeout: float) -> T:
        try:
            return await asyncio.wait_for(asyncio.to_thread(function, *args), timeout)
        except MilvusException as exc:
            raise Unavailable("vector index unavailable") from exc
        except TimeoutError as exc:
            raise Unavailable("vector index did not answer in time") from exc

    async def live(self, model: str, timeout: float, fresh: bool = False) -> ModelCollection:
        cached = self._cache.get(model)
        if cached and not fresh and time.monotonic() - cached[0] < self.registry_ttl:
            return cached[1]
        live = await self._run(self.store.resolve, model, timeout=timeout)
        self._cache[model] = (time.monotonic(), live)
        return live

    async def _with_refresh(self, model: str, timeout: float, call: Callable[
            [ModelCollection, float], T], check: Callable[[int], None] | None = None
                            ) -> tuple[T, ModelCollection]:
        deadline = time.monotonic() + timeout
        live = await self.live(model, timeout)
        if check is not None:
            check(live.dim)
        try:
            return await self._run(call, live, timeout, timeout=timeout), live
        except Unavailable:
            remaining = deadline - time.monotonic()
            if remaining <= 0.01:
                raise
            live = await self.live(model, remaining, fresh=True)
            remaining = deadline - time.monotonic()
            return await self._run(call, live, remaining, timeout=remaining), live

    async def search(self, model: str, vectors: Sequence[Sequence[float]], top_k: int,
                     filters: Filters, timeout: float,
                     dim_check: Callable[[int], None]) -> tuple[list, ModelCollection]:
        return await self._with_refresh(
            model, timeout, lambda col, t: self.store.search(col, vectors, top_k, filters, t),
            dim_check)

    async def vectors(self, model: str, ids: Sequence[int],
                      timeout: float) -> tuple[dict[int, np.ndarray], ModelCollection]:
        return await self._with_refresh(model, timeout,
                                        lambda col, t: self.store.vectors(col, ids, t))

    async def describe(self, model: str, timeout: float) -> ModelCollection:
        return await self.live(model, timeout, fresh=True)

    async def ready(self, timeout: float) -> bool:
        """Whether Milvus answers and the registry exists (created if missing)."""
        try:
            await self._run(self.store.ensure_registry, timeout=timeout)
        except (Unavailable, NotFound):
            self.store.close()
            return False
        return True
