"""The gateway's copy of the catalog's movies: a versioned snapshot, refreshed on change.

Every answer shows titles, years and genres, and the reasons name movies: reading them
from the catalog on each miss was a network hop per answer for data that changes only
when a movie is added or edited. So the gateway holds every movie (``ListMovies``, a
page at a time) with the catalog's version (a counter PostgreSQL bumps on every change
of the movies table), polls that version every ``interval`` seconds and reloads when it
moved: an added movie shows within ``interval`` plus a reload. Ids the snapshot does
not hold yet (added since the last poll, or before the first load) are read from the
catalog for that answer (``GetMovies``) and kept until the next reload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import prometheus_client

from movierec import limits
from movierec.apps.gateway.backends import Downstream
from movierec.common.v1 import common_pb2
from movierec.server.budget import Deadline

log = logging.getLogger(__name__)
SNAPSHOT_VERSION = prometheus_client.Gauge(
    "movierec_gateway_catalog_version", "Catalog version of the gateway's movie snapshot")
SNAPSHOT_MISSES = prometheus_client.Counter(
    "movierec_gateway_snapshot_misses_total", "Movies read from the catalog, not the snapshot")


class MovieSnapshot:
    """All movies by id, as of catalog version :attr:`version` (0: not loaded yet)."""

    def __init__(self, down: Downstream, interval: float = 1.0,
                 page: int = limits.MAX_LIST_MOVIES, call_timeout: float = 5.0) -> None:
        self.down = down
        self.interval = interval
        self.page = page
        self.call_timeout = call_timeout
        self.version = 0
        self.movies: dict[int, common_pb2.Movie] = {}
        self._extra: dict[int, common_pb2.Movie] = {}

    async def _load(self) -> tuple[dict[int, common_pb2.Movie], int]:
        movies, after, versions = {}, 0, set()
        while True:
            deadline = Deadline.start(None, self.call_timeout)
            page, version = await self.down.list_movies(after, self.page, deadline)
            versions.add(version)
            movies.update((m.movie_id, m) for m in page)
            if len(page) < self.page:
                break
            after = page[-1].movie_id
        return movies, (versions.pop() if len(versions) == 1 else 0)

    async def refresh(self) -> bool:
        """Reload when the catalog's version moved; True when the snapshot changed. A load
        whose pages saw different versions (a write in between) is used and redone."""
        current = await self.down.catalog_version(Deadline.start(None, self.call_timeout))
        if current == self.version:
            return False
        movies, version = await self._load()
        self.movies, self._extra, self.version = movies, {}, version
        SNAPSHOT_VERSION.set(version)
        log.info("movie snapshot loaded", extra={"catalog_version": version,
                                                 "movies": len(movies)})
        return True

    async def run(self) -> None:
        """Refresh forever; a failed refresh keeps the snapshot and tries again."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - the catalog may be restarting
                log.warning("movie snapshot refresh failed: %s", type(exc).__name__)
            await asyncio.sleep(self.interval)

    async def get(self, ids: Iterable[int], deadline: Deadline) -> dict[int, common_pb2.Movie]:
        """The movies of ``ids`` that exist; ones the snapshot lacks come from the catalog."""
        found, missing = {}, []
        for movie_id in dict.fromkeys(ids):
            movie = self.movies.get(movie_id) or self._extra.get(movie_id)
            if movie is None:
                missing.append(movie_id)
            else:
                found[movie_id] = movie
        if missing:
            SNAPSHOT_MISSES.inc(len(missing))
            fetched = await self.down.movies(missing[:limits.MAX_BATCH_IDS], deadline)
            self._extra.update(fetched)
            found.update(fetched)
        return found
