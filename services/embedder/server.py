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

from movierec import limits, settings
from movierec.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from movierec.models.user_input import DEFAULT_HISTORY_LIMIT
from movierec.registry import EMBEDDER
from movierec.server.factory import (
    ManagedServer,
    ServiceSpec,
    build_server,
    follow_health,
    start_task,
)
from movierec.server.runner import serve_main
from movierec.services.embedder.models import ModelSet
from movierec.services.embedder.servicer import EmbedderServicer

SERVICE = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name


@dataclass(frozen=True)
class EmbedderSettings:
    port: int = settings.port(EMBEDDER)
    metrics_port: int = settings.metrics_port(EMBEDDER)
    artifacts: str = settings.setting("MOVIEREC_ARTIFACTS", "artifacts",
                                      doc="model artifacts root")
    reload_seconds: float = settings.setting("EMBEDDER_RELOAD_SECONDS", 30.0, minimum=0.1,
                                             maximum=86_400,
                                             doc="how often newer artifacts are looked for")
    history_limit: int = settings.setting("EMBEDDER_HISTORY_LIMIT", DEFAULT_HISTORY_LIMIT,
                                          minimum=1, maximum=limits.MAX_HISTORY,
                                          doc="newest ratings used for a known user's vector")


async def create_server(config: EmbedderSettings, port: int = 0) -> tuple[ManagedServer, int]:
    """Serve the embedder on ``port``; SERVING once both models are loaded."""
    models = ModelSet(Path(config.artifacts))
    models.reload()
    servicer = EmbedderServicer(models, config.history_limit)
    spec = ServiceSpec(SERVICE, servicer, embedder_pb2_grpc.add_EmbedderServicer_to_server)
    server, bound = await build_server("embedder", [spec], port,
                                       settings.server_settings())

    async def probe() -> bool:
        await asyncio.to_thread(models.reload)
        return models.ready
    start_task(server, follow_health(server, probe, config.reload_seconds, "models"))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, models.reload)
    return server, bound


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main("embedder", EmbedderSettings, create_server, argv or [])
