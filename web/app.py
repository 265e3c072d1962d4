"""The FastAPI application: API routes, offline docs, the demo page and request logs.

Swagger UI (``/docs``) and ReDoc (``/redoc``) load their JavaScript and CSS from the
``fastapi-offline`` package instead of a CDN, so the docs work without internet.
Each request gets an id (its trace id when tracing is on, else ``X-Request-ID`` or a
fresh one) that is logged, returned and forwarded to the gateway as gRPC metadata; with
tracing on, FastAPI's native telemetry opens each request's span (:mod:`.server` puts the
sampling gate in front). Bodies are bounded and every answer carries the security headers
(:mod:`movierec.apps.web.security`); Prometheus metrics are not served here but on the
internal ``WEB_METRICS_PORT`` (:mod:`.server`).
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from movierec import tracing
from movierec.apps.web import routes, status
from movierec.apps.web.backend import Backend
from movierec.apps.web.security import BodyLimit, SecurityHeaders
from movierec.logs import request_id

log = logging.getLogger("web.http")
STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 64 * 1024


def _lifespan(gateway_addr: str, timeout: float, credentials: grpc.ChannelCredentials | None):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.backend = Backend(gateway_addr, timeout, credentials)
        try:
            yield
        finally:
            await app.state.backend.close()
    return lifespan


async def _request_context(request: Request, call_next):
    rid = (tracing.current_trace_id() or request.headers.get("x-request-id")
           or uuid.uuid4().hex[:16])[:64]
    token = request_id.set(rid)
    start = time.perf_counter()
    try:
        response = await call_next(request)
        response.headers["X-Request-ID"] = rid
        if request.url.path.startswith("/api/"):
            log.info("request", extra={"method": request.method, "path": request.url.path,
                                       "status": response.status_code,
                                       "ms": round(1000 * (time.perf_counter() - start), 1)})
        return response
    finally:
        request_id.reset(token)


def create_app(gateway_addr: str, timeout: float, *,
               credentials: grpc.ChannelCredentials | None = None,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The facade over the gateway at ``gateway_addr`` (TLS with ``credentials``)."""
    app = FastAPIOffline(title="movierec web API", version="1",
                         description="HTTP/JSON facade over the movierec gRPC gateway.",
                         lifespan=_lifespan(gateway_addr, timeout, credentials))
    status.install(app)
    # the last added runs first: headers on everything, then ids, then the body limit
    # (inside the request-id middleware, whose task group would wrap its 413)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.middleware("http")(_request_context)
    app.add_middleware(SecurityHeaders)
    app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")
    return app
