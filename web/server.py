"""The facade process: settings, JSON logs and uvicorn (``movierec serve web``).

Reads ``WEB_PORT``, ``GATEWAY_ADDR``, ``CATALOG_ADDR``, ``WEB_CALL_TIMEOUT`` and the
shared ``MOVIEREC_HOST`` / ``MOVIEREC_LOG_LEVEL`` / ``MOVIEREC_GRACE_SECONDS`` once,
exits 2 on a bad value, and serves until SIGTERM/Ctrl-C (uvicorn drains in-flight
requests for the grace time).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import uvicorn

from movierec import settings
from movierec.apps.web.app import create_app
from movierec.registry import GATEWAY, WEB
from movierec.server.runner import start_process


@dataclass(frozen=True)
class WebSettings:
    port: int = settings.port(WEB)
    gateway_addr: str = settings.address(GATEWAY)
    call_timeout: float = settings.setting("WEB_CALL_TIMEOUT", 5.0, minimum=0.01, maximum=60,
                                           doc="deadline of each gRPC call of the facade (s)")


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
    app = create_app(config.gateway_addr, config.call_timeout)
    uvicorn.run(app, host=args.host or server.host,
                port=config.port if args.port is None else args.port, log_config=None,
                access_log=False, timeout_graceful_shutdown=int(server.grace_seconds) or 1)
    return 0
