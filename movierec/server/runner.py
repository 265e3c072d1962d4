"""The ``movierec serve NAME`` entry point shared by every service process.

Parses ``--port``/``--metrics-port``, reads settings once (failing fast), installs
JSON logging with the process' secrets redacted (:mod:`movierec.security.redact`)
and tracing when the settings turn it on (:mod:`movierec.tracing`), starts the
metrics endpoint, builds the server through the service's
``create_server`` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvloop

from movierec import logs, settings, tracing
from movierec.security import redact
from movierec.server import metrics
from movierec.server.factory import ManagedServer, run_until_signal

log = logging.getLogger(__name__)
Factory = Callable[[Any, int], Awaitable[tuple[ManagedServer, int]]]


def start_process(name: str, settings_cls: type) -> tuple[Any, settings.ServerSettings] | None:
    """Read ``settings_cls`` and the shared server settings once, install JSON logging and
    log the (masked) settings; None after printing why when a variable is bad."""
    try:
        config = settings.load(settings_cls)
        server_config = settings.server_settings()
    except settings.SettingsError as exc:
        print(f"movierec serve {name}: {exc}", file=sys.stderr)
        return None
    logs.configure(name, server_config.log_level)
    redact.install(settings.secrets(config))
    log.info("settings", extra={"settings": settings.describe(config)})
    if tracing.setup(name, server_config):
        log.info("tracing", extra={"sample": server_config.trace_sample,
                                   "endpoint": server_config.trace_endpoint or None,
                                   "file": server_config.trace_file or None})
    return config, server_config


def serve_main(name: str, settings_cls: type, factory: Factory, argv: Sequence[str],
               port_attr: str = "port", metrics_attr: str = "metrics_port") -> int:
    """Run service ``name`` until SIGTERM (on uvloop's event loop); exit 2 on bad settings."""
    parser = argparse.ArgumentParser(prog=f"movierec serve {name}")
    parser.add_argument("--port", type=int, help="gRPC port (overrides the environment)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (0 = free port)")
    args = parser.parse_args(argv)
    loaded = start_process(name, settings_cls)
    if loaded is None:
        return 2
    config, server_config = loaded
    port = args.port if args.port is not None else getattr(config, port_attr)
    metrics_port = args.metrics_port
    if metrics_port is None:
        metrics_port = getattr(config, metrics_attr, -1)
    uvloop.run(_serve(factory, config, port, metrics_port, server_config.host))
    return 0


async def _serve(factory: Factory, config: Any, port: int, metrics_port: int, host: str) -> None:
    if metrics_port >= 0:
        bound = metrics.start(metrics_port, host)
        log.info("metrics", extra={"metrics_port": bound})
    server, _bound = await factory(config, port)
    await run_until_signal(server)
