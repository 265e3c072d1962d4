"""Keeps what ``movierec up`` started alive, or stops all of it with a clear message.

Every managed process (a store server, a service) is a :class:`Managed`: a name, a
check that says whether it is alive (which also reaps it, so nothing stays a zombie)
and a way to start it again. :meth:`Supervisor.check` restarts a dead one with
exponential backoff; one that dies more than ``max_restarts`` times within ``window``
seconds raises :class:`GaveUp`, and ``up`` then stops everything it started.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from movierec.errors import Unavailable

log = logging.getLogger(__name__)


class GaveUp(Unavailable):
    """A managed process kept dying."""


@dataclass
class Managed:
    """One process ``up`` is responsible for."""

    name: str
    alive: Callable[[], bool]
    restart: Callable[[], None]
    deaths: list[float] = field(default_factory=list)
    next_try: float = 0.0


def process_alive(proc: subprocess.Popen | None) -> bool:
    """Whether ``proc`` runs; a dead one is reaped by the poll."""
    return proc is not None and proc.poll() is None


class Supervisor:
    """Restarts dead processes with backoff; gives up on one that keeps dying."""

    def __init__(self, max_restarts: int = 3, window: float = 60.0, backoff: float = 1.0,
                 say: Callable[[str], None] = print) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self.backoff = backoff
        self.say = say
        self.managed: list[Managed] = []

    def watch(self, name: str, alive: Callable[[], bool], restart: Callable[[], None]) -> None:
        self.managed.append(Managed(name, alive, restart))

    def check(self, now: float | None = None) -> list[str]:
        """Restart whatever died; the names restarted. Raises GaveUp."""
        now = time.monotonic() if now is None else now
        restarted = []
        for item in self.managed:
            if item.alive() or now < item.next_try:
                continue
            item.deaths = [t for t in item.deaths if now - t < self.window] + [now]
            if len(item.deaths) > self.max_restarts:
                raise GaveUp(f"{item.name} died {len(item.deaths)} times within "
                             f"{self.window:.0f}s; stopping everything (see its log)")
            item.next_try = now + self.backoff * 2 ** (len(item.deaths) - 1)
            self.say(f"  {item.name} died; restarting it")
            log.warning("restarting %s", item.name)
            try:
                item.restart()
            except Exception as exc:  # noqa: BLE001 - counted as another death next round
                self.say(f"  {item.name} did not restart: {exc}")
                continue
            restarted.append(item.name)
        return restarted

    def run(self, interval: float = 0.5) -> None:
        """Check forever (until KeyboardInterrupt/SystemExit or GaveUp)."""
        while True:
            self.check()
            time.sleep(interval)
