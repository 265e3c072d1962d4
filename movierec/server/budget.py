"""How long a handler may spend on its own outbound work.

:class:`Deadline` is one request's budget across several outbound calls (the gateway's
pipeline: each call gets at most ``per_call``, never past the request's end);
:func:`call_budget` is the one-call case a service handler needs, built on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc

MIN_SECONDS = 0.01
#: The shortest timeout :meth:`Deadline.timeout` hands out (a call past the end still
#: goes out, and fails at once with DEADLINE_EXCEEDED).
MIN_CALL_SECONDS = 0.001


@dataclass
class Deadline:
    """What is left of one request's time budget."""

    end: float
    per_call: float

    @classmethod
    def start(cls, remaining: float | None, per_call: float) -> Deadline:
        """From the caller's remaining seconds (``context.time_remaining()``); without a
        caller deadline, four calls' worth."""
        budget = per_call * 4 if remaining is None else remaining
        return cls(time.monotonic() + budget, per_call)

    def timeout(self) -> float:
        """The next call's timeout: ``per_call``, at most what is left."""
        return max(MIN_CALL_SECONDS, min(self.per_call, self.end - time.monotonic()))

    def left(self) -> float:
        """Seconds to the end (negative once past it)."""
        return self.end - time.monotonic()


def call_budget(context: grpc.aio.ServicerContext, cap: float) -> float:
    """Seconds left of the caller's deadline, at most ``cap`` (``cap`` without a deadline)."""
    return max(MIN_SECONDS, Deadline.start(context.time_remaining(), cap).timeout())
