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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: the interrupting Shutdown this process installed last (what :func:`deferred` defers)
_active: Shutdown | None = None


class Shutdown:
    """The first stop signal a process received (0: none), recorded by a lock-free handler."""

    def __init__(self, *, interrupt: bool = False) -> None:
        self.signum = 0
        self.interrupt = interrupt
        self._stopping = False
        self._deferring = 0      # depth of :func:`deferred` blocks
        self._pending = False    # an interrupt waits for the outermost block to end

    def install(self, signals: Iterable[int] = STOP_SIGNALS) -> Shutdown:
        """Handle ``signals`` with :meth:`handle` (call from the main thread), then unblock
        them: a starter that used :func:`held` left them blocked, and one that arrived
        since is delivered now, to this handler."""
        global _active
        _active = self
        signals = list(signals)
        for sig in signals:
            signal.signal(sig, self.handle)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
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
                if self._deferring:
                    self._pending = True
                    return
                raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextmanager
def deferred() -> Iterator[None]:
    """Inside, a stop signal is recorded and its KeyboardInterrupt raised only on leaving.

    For starting a child and recording it in one step: an interrupt raised inside
    ``subprocess.Popen`` after its fork (while it waits for the child's exec) leaves a
    child nobody recorded, so the stop sequence cannot end it (a service outlived
    ``movierec up`` that way). Wrap the start and the assignment, not the waits after.
    """
    shutdown = _active
    if shutdown is None or not shutdown.interrupt:
        yield
        return
    shutdown._deferring += 1
    try:
        yield
    finally:
        shutdown._deferring -= 1
        if not shutdown._deferring and shutdown._pending:
            shutdown._pending = False
            raise KeyboardInterrupt(f"signal {signal.Signals(shutdown.signum).name}")


@contextmanager
def held() -> Iterator[None]:
    """Inside, SIGTERM and SIGINT are blocked in this thread; a child started here starts
    with them blocked (a signal mask survives fork and exec) until its
    :meth:`Shutdown.install` unblocks them.

    For a child that must act on a stop signal at any moment of its life: one sent before
    its handler exists waits, pending, instead of landing in an interpreter that is still
    starting (a SIGINT 59 ms after the Milvus supervisor started was lost that way in CI,
    and the supervisor and its Milvus ran on). Signals sent to this process meanwhile are
    delivered when the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
