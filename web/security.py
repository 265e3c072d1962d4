"""HTTP hardening of the facade: a request body limit and the browser security headers.

Both are plain ASGI middlewares, so they hold for every route, static file and error:

- :class:`BodyLimit`: a body over ``WEB_MAX_BODY_BYTES`` is 413, whether its
  ``Content-Length`` says so up front or a chunked body grows past it while read;
- :class:`SecurityHeaders`: a Content-Security-Policy that lets the page load only its
  own script, style and API (no inline script, no framing, no plugins), ``nosniff``,
  ``DENY`` framing, no referrer, no powerful features, same-origin isolation,
  ``no-store`` on API answers and HSTS when the request came over HTTPS. The offline
  API docs (``/docs``, ``/redoc``) need inline script and style and get a CSP that
  allows them, still self-only.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from movierec.apps.web.status import body

_SELF_ONLY = ("default-src 'self'; img-src 'self' data:; connect-src 'self'; "
              "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
PAGE_CSP = f"{_SELF_ONLY}; script-src 'self'; style-src 'self'"
DOCS_CSP = (f"{_SELF_ONLY}; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; worker-src 'self' blob:")
DOCS_PATHS = ("/docs", "/redoc")
HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
HSTS = "max-age=31536000; includeSubDomains"


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"request body over {limit} bytes")


class BodyLimit:
    """413 for a request body over ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await body("INVALID_ARGUMENT", "Content-Length is not a number", 400)(
                    scope, receive, send)
                return
            if int(declared) > self.limit:
                await body("REQUEST_ENTITY_TOO_LARGE", _too_large(self.limit).detail, 413)(
                    scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _too_large(self.limit)
            return message
        await self.app(scope, limited, send)


class SecurityHeaders:
    """Adds the CSP and the other security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def headers_for(scope: Scope) -> list[tuple[bytes, bytes]]:
        path: str = scope.get("path", "")
        csp = DOCS_CSP if path.startswith(DOCS_PATHS) else PAGE_CSP
        extra: dict[str, Any] = {**HEADERS, "content-security-policy": csp}
        if path.startswith("/api/"):
            extra["cache-control"] = "no-store"
        if scope.get("scheme") == "https":
            extra["strict-transport-security"] = HSTS
        return [(k.encode(), v.encode()) for k, v in extra.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = self.headers_for(scope)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in added}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + added}
            await send(message)
        await self.app(scope, receive, with_headers)
