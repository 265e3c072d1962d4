"""Single flight: concurrent identical cache misses are computed once.

The first caller of a key starts the computation as a task of its own; later callers
of the same key wait for that task. Each caller keeps its own deadline and its own
cancellation: a caller that gives up or is cancelled stops waiting, the computation
goes on for the others and is cancelled only when nobody waits for it any more. A
caller whose deadline outlives a computation that failed for lack of time (or was
cancelled) starts a fresh one, so a short-deadline leader never fails a
long-deadline follower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from movierec.errors import DeadlineExceeded

#: Outcomes of a shared computation that say nothing about a caller with more time.
_TIME_CODES = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


class Abandoned(Exception):
    """The shared computation was cancelled: every caller it served had left."""


@dataclass
class _Flight:
    task: asyncio.Task
    waiters: int = 0


def ran_out_of_time(exc: BaseException) -> bool:
    if isinstance(exc, Abandoned | TimeoutError | DeadlineExceeded):
        return True
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _TIME_CODES


class SingleFlight:
    """Shares one computation per key among concurrent callers."""

    def __init__(self, on_event: Callable[[str], None] = lambda event: None) -> None:
        self._flights: dict[str, _Flight] = {}
        self.on_event = on_event

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: str, compute: Callable[[], Awaitable[bytes]],
                  timeout: float) -> bytes:
        """``compute()``'s result for ``key``, waiting at most ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            flight = self._flights.get(key)
            if flight is None or flight.task.done():
                flight = self._start(key, compute)
            else:
                self.on_event("coalesced")
            try:
                return await self._wait(flight, deadline - loop.time())
            except (Abandoned, DeadlineExceeded, grpc.aio.AioRpcError) as exc:
                if not ran_out_of_time(exc) or deadline - loop.time() <= 0:
                    raise

    def _start(self, key: str, compute: Callable[[], Awaitable[bytes]]) -> _Flight:
        flight = _Flight(asyncio.get_running_loop().create_task(compute()))
        self._flights[key] = flight
        flight.task.add_done_callback(lambda _task: self._finished(key, flight))
        return flight

    def _finished(self, key: str, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved: nobody may be waiting any more

    async def _wait(self, flight: _Flight, timeout: float) -> bytes:
        """The flight's result; this caller's cancellation propagates as usual."""
        if timeout <= 0:
            raise DeadlineExceeded("deadline exceeded")
        flight.waiters += 1
        try:
            done, _ = await asyncio.wait({flight.task}, timeout=timeout)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()
        if not done:
            raise DeadlineExceeded("deadline exceeded")
        if flight.task.cancelled():
            raise Abandoned("the shared computation was cancelled")
        return flight.task.result()
