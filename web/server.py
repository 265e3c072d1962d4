"""The facade process: settings, JSON logs and uvicorn (``movierec serve web``).

Reads ``WEB_PORT``, ``WEB_METRICS_PORT``, ``GATEWAY_ADDR``, ``WEB_CALL_TIMEOUT``,
``WEB_MAX_BODY_BYTES`` and the shared ``MOVIEREC_HOST`` / ``MOVIEREC_LOG_LEVEL`` /
``MOVIEREC_GRACE_SECONDS`` / ``MOVIEREC_TLS_*`` once, exits 2 on a bad value, serves
Prometheus metrics on the internal metrics port (never on the public one) and the app
until SIGTERM/Ctrl-C (uvicorn drains in-flight requests for the grace time). uvicorn
takes the client address from ``X-Forwarded-For`` only from the proxies in
``FORWARDED_ALLOW_IPS`` (uvicorn's own variable, default 127.0.0.1).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import uvicorn

from movierec import settings, tracing
from movierec.apps.web.app import MAX_BODY_BYTES, create_app
from movierec.registry import GATEWAY, WEB
from movierec.security import tls
from movierec.server import metrics
from movierec.server.runner import start_process

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebSettings:
    port: int = settings.port(WEB)
    metrics_port: int = settings.metrics_port(WEB)
    gateway_addr: str = settings.address(GATEWAY)
    call_timeout: float = settings.setting("WEB_CALL_TIMEOUT", 5.0, minimum=0.01, maximum=60,
                                           doc="deadline of each gRPC call of the facade (s)")
    max_body_bytes: int = settings.setting("WEB_MAX_BODY_BYTES", MAX_BODY_BYTES, minimum=1024,
                                           maximum=16 * 1024 * 1024,
                                           doc="largest request body (413 above)")


def _plain_uvicorn_logs(record: logging.LogRecord) -> bool:
    record.__dict__.pop("color_message", None)  # uvicorn's ANSI copy of the message
    return True


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="movierec serve web", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, help="HTTP port (overrides WEB_PORT)")
    p.add_argument("--host", help="bind address (overrides MOVIEREC_HOST)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    loaded = start_process("web", WebSettings)
    if loaded is None:
        return 2
    config, server = loaded
    logging.getLogger("uvicorn.error").addFilter(_plain_uvicorn_logs)
    host = args.host or server.host
    if config.metrics_port >= 0:
        log.info("metrics", extra={"metrics_port": metrics.start(config.metrics_port, host)})
    app = create_app(config.gateway_addr, config.call_timeout,
                     credentials=tls.channel_credentials(server),
                     max_body_bytes=config.max_body_bytes)
    port = config.port if args.port is None else args.port
    uvicorn.run(tracing.asgi_gate(app), host=host, port=port,
                log_config=None, access_log=False, server_header=False,
                timeout_graceful_shutdown=int(server.grace_seconds) or 1)
    return 0
