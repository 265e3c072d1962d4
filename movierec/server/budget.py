"""How long a handler may spend on its own outbound work."""

from __future__ import annotations

import grpc

MIN_SECONDS = 0.01


def call_budget(context: grpc.aio.ServicerContext, cap: float) -> float:
    """Seconds left of the caller's deadline, at most ``cap`` (``cap`` without a deadline)."""
    remaining = context.time_remaining()
    return max(MIN_SECONDS, cap if remaining is None else min(remaining, cap))
