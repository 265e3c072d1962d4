"""Domain errors shared by every service, models and stores.

Code below the servicers raises these; :mod:`movierec.server.status` maps them to
gRPC status codes in one place. Messages must be safe to show to a caller.
"""

from __future__ import annotations


class MovierecError(Exception):
    """Base class of every error the project raises on purpose."""


class InvalidArgument(MovierecError):
    """The caller sent a value that can never succeed; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(MovierecError):
    """The one thing the caller asked for does not exist."""


class Unavailable(MovierecError):
    """A dependency (database, cache, index, downstream service) cannot be reached."""


class DeadlineExceeded(MovierecError):
    """The work did not finish within the caller's deadline."""


class FailedPrecondition(MovierecError):
    """The system is not in a state to do this yet (e.g. no model loaded)."""


class DataError(MovierecError):
    """Input data (a MovieLens file, an artifact) is missing or malformed."""


class Unauthenticated(MovierecError):
    """No valid credentials: the token is missing, malformed, expired or not ours."""


class PermissionDenied(MovierecError):
    """Valid credentials that do not cover this request (another user's id)."""


class ResourceExhausted(MovierecError):
    """The caller is over a limit (its request rate); it may retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
