"""The embedder service process: settings, model loading and hot reload.

Health is NOT_SERVING until both model artifacts are loaded. Every
``EMBEDDER_RELOAD_SECONDS`` (and on SIGHUP) the process looks for newer artifact
versions and swaps them in without a restart; ``GetModelInfo`` reports the versions.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from movierec import settings
from movierec.catalog.v1 import catalog_pb2_grpc
from movierec.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from movierec.server import client
from movierec.server.factory import (
    ManagedServer,
    ServiceSpec,
    build_server,
    follow_health,
    start_task,
)
from movierec.server.runner import serve_main
from services.embedder.models import ModelSet
from services.embedder.servicer import EmbedderServicer

SERVICE = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name


@dataclass(frozen=True)
class EmbedderSettings:
    port: int = settings.setting("EMBEDDER_PORT", 50051, minimum=0, maximum=65535,
                                 doc="embedder gRPC port")
    metrics_port: int = settings.setting("EMBEDDER_METRICS_PORT", 9091, minimum=-1,
                                         maximum=65535, doc="embedder metrics port (-1 off)")
    artifacts: str = settings.setting("MOVIEREC_ARTIFACTS", "artifacts",
                                      doc="model artifacts root")
    catalog_addr: str = settings.setting("CATALOG_ADDR", "127.0.0.1:50053",
                                         doc="catalog address (host:port)")
    call_timeout: float = settings.setting("EMBEDDER_CALL_TIMEOUT", 1.0, minimum=0.01,
                                           maximum=60, doc="deadline of catalog calls (s)")
    reload_seconds: float = settings.setting("EMBEDDER_RELOAD_SECONDS", 30.0, minimum=0.1,
                                             maximum=86_400,
                                             doc="how often newer artifacts are looked for")
    history_limit: int = settings.setting("EMBEDDER_HISTORY_LIMIT", 200, minimum=1,
                                          maximum=5000,
                                          doc="newest ratings used for a known user's vector")


async def create_server(config: EmbedderSettings, port: int = 0) -> tuple[ManagedServer, int]:
    """Serve the embedder on ``port``; SERVING once both models are loaded."""
    models = ModelSet(Path(config.artifacts))
    models.reload()
    catalog_channel = client.channel(config.catalog_addr)
    servicer = EmbedderServicer(models, catalog_pb2_grpc.CatalogStub(catalog_channel),
                                config.call_timeout, config.history_limit)
    spec = ServiceSpec(SERVICE, servicer, embedder_pb2_grpc.add_EmbedderServicer_to_server)
    server, bound = await build_server("embedder", [spec], port,
                                       settings.load(settings.ServerSettings))
    server.on_stop(catalog_channel.close)

    async def probe() -> bool:
        await asyncio.to_thread(models.reload)
        return models.ready
    start_task(server, follow_health(server, probe, config.reload_seconds, "models"))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, models.reload)
    return server, bound


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main("embedder", EmbedderSettings, create_server, argv or [])
