"""Opaque page tokens: an offset bound to the request that produced it.

A token carries the offset of the next page and a fingerprint of the request's
other fields; presenting it with a different request is INVALID_ARGUMENT, so a
client can never mix pages of two different queries.
"""

from __future__ import annotations

import base64
import hashlib
import json

from movierec.errors import InvalidArgument
from movierec.limits import MAX_OFFSET


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:16]


def encode(offset: int, request_print: str) -> str:
    raw = json.dumps({"o": offset, "f": request_print}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, request_print: str, field: str = "page_token") -> int:
    """The offset in ``token`` (0 for an empty token); InvalidArgument if foreign or bad."""
    if not token:
        return 0
    if len(token) > 200:
        raise InvalidArgument(field, "is not a token this service issued")
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset, seen = data["o"], str(data["f"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(field, "is not a token this service issued") from exc
    if seen != request_print:
        raise InvalidArgument(field, "belongs to a different request")
    if type(offset) is not int or not 0 <= offset <= MAX_OFFSET:
        raise InvalidArgument(field, "is out of range")
    return offset
