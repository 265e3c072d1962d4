"""Reading gRPC metadata (invocation metadata, trailers): the one scanner every
process uses for request ids, retry marks, credentials and forwarded addresses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def first(metadata: Iterable[tuple[str, Any]] | None, key: str) -> str:
    """The first non-empty value of ``key`` in ``metadata`` (``(key, value)`` pairs, as
    ``context.invocation_metadata()`` or ``trailing_metadata()`` give them), as text;
    "" when there is none."""
    for name, value in metadata or ():
        if name == key and value:
            return str(value)
    return ""
