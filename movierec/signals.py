"""SIGTERM/SIGINT for the local runtime's long-lived processes, learned without locks.

A Python signal handler runs in the main thread between two bytecodes of whatever it
was doing, and a second signal can run the handler again inside the first one. So a
handler that takes a lock (``threading.Event.set`` does) deadlocks when a signal lands
while the main thread, or the handler itself, holds that lock: the Milvus supervisor
once hung that way on a burst of three signals (issue 31). :class:`Shutdown`'s handler
only assigns two attributes: no lock, no I/O, nothing that can block.

Two uses:
- a loop polls :attr:`Shutdown.requested` (``interrupt=False``: the Milvus supervisor);
- ``interrupt=True`` also raises :class:`KeyboardInterrupt` once, at the first signal, so
  a long blocking step (training, a health wait, the supervision loop) ends and the
  caller's ``finally`` stops what it started; :meth:`Shutdown.stopping` marks that stop
  sequence, and every signal from then on is only recorded, never raised into it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    """The first stop signal a process received (0: none), recorded by a lock-free handler."""

    def __init__(self, *, interrupt: bool = False) -> None:
        self.signum = 0
        self.interrupt = interrupt
        self._stopping = False

    def install(self, signals: Iterable[int] = STOP_SIGNALS) -> Shutdown:
        """Handle ``signals`` with :meth:`handle` (call from the main thread)."""
        for sig in signals:
            signal.signal(sig, self.handle)
        return self

    @property
    def requested(self) -> bool:
        return self.signum != 0

    def stopping(self) -> None:
        """The stop sequence begins: later signals are recorded, never raised."""
        self._stopping = True

    def handle(self, signum: int, _frame: FrameType | None = None) -> None:
        """Record ``signum``; with ``interrupt``, raise KeyboardInterrupt the first time."""
        if self.signum == 0:
            self.signum = signum
            if self.interrupt and not self._stopping:
                self._stopping = True
                raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
