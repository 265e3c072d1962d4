"""The retriever service process: settings and server factory.

Health is NOT_SERVING until Milvus answers (on Milvus Lite: and the model registry
exists), and follows Milvus afterwards, so a Milvus outage is visible to probes and ends
when it returns. The index settings are read by the vector loader too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from movierec import limits, settings
from movierec.models import registry as models
from movierec.registry import RETRIEVER
from movierec.retriever.v1 import retriever_pb2, retriever_pb2_grpc
from movierec.server.factory import (
    ManagedServer,
    ServiceSpec,
    build_server,
    follow_health,
    start_task,
)
from movierec.server.runner import serve_main
from movierec.services.retriever.batcher import BatchedSearch
from movierec.services.retriever.engine import SearchEngine
from movierec.services.retriever.milvus import MilvusAccess, MilvusVectors
from movierec.services.retriever.records import INDEX_TYPES, IndexSpec
from movierec.services.retriever.servicer import RetrieverServicer

SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://")
SERVICE = retriever_pb2.DESCRIPTOR.services_by_name["Retriever"].full_name


@dataclass(frozen=True)
class RetrieverSettings:
    milvus_uri: str = settings.setting("MILVUS_URI", "", secret=True,
                                       doc="Milvus address (required by the retriever)")
    # MILVUS_TOKEN and MILVUS_CA, as MilvusAccess declares them (the loads read those).
    milvus_token: str = dataclasses.field(
        default="", metadata=dataclasses.fields(MilvusAccess)[0].metadata)
    milvus_ca: str = dataclasses.field(
        default="", metadata=dataclasses.fields(MilvusAccess)[1].metadata)
    port: int = settings.port(RETRIEVER)
    metrics_port: int = settings.metrics_port(RETRIEVER)
    call_timeout: float = settings.setting("RETRIEVER_CALL_TIMEOUT", 1.0, minimum=0.01,
                                           maximum=60, doc="longest Milvus time per call (s)")
    registry_ttl: float = settings.setting("RETRIEVER_REGISTRY_TTL", 1.0, minimum=0,
                                           maximum=3600,
                                           doc="seconds a model's live collection is cached")
    health_interval: float = settings.setting("RETRIEVER_HEALTH_INTERVAL", 2.0, minimum=0.1,
                                              maximum=60, doc="seconds between Milvus probes")
    hnsw_ef: int = settings.setting("RETRIEVER_HNSW_EF", 128, minimum=1, maximum=32768,
                                    doc="HNSW search list size (raised to top_k when smaller)")
    index: str = settings.setting("RETRIEVER_INDEX", "HNSW", choices=INDEX_TYPES,
                                  doc="index `movierec load vectors` builds (Lite: FLAT)")
    hnsw_m: int = settings.setting("RETRIEVER_HNSW_M", 16, minimum=4, maximum=64,
                                   doc="HNSW links per node, for loads")
    hnsw_ef_construction: int = settings.setting(
        "RETRIEVER_HNSW_EF_CONSTRUCTION", 200, minimum=8, maximum=512,
        doc="HNSW build search list size, for loads")
    exact_below: int = settings.setting(
        "RETRIEVER_EXACT_BELOW", 100_000, minimum=0, maximum=10**9,
        doc="collections with fewer vectors get exact FLAT search, for loads (0: never)")

    memory_below: int = settings.setting(
        "RETRIEVER_MEMORY_BELOW", 100_000, minimum=0, maximum=10**7,
        doc="live collections with at most this many vectors are also held in memory and "
            "searched there exactly, as FLAT search in Milvus would (0: always Milvus)")
    batch_max: int = settings.setting(
        "RETRIEVER_BATCH_MAX", 16, minimum=1, maximum=256,
        doc="query vectors per Milvus search when concurrent searches are batched (1: off)")
    batch_exclude: int = settings.setting(
        "RETRIEVER_BATCH_EXCLUDE", 512, minimum=0, maximum=limits.MAX_EXCLUDE,
        doc="longest exclusion list a batched search may carry (longer: searched alone)")

    def __post_init__(self) -> None:
        self.access().client_options(self.milvus_uri)   # a CA needs https://

    def access(self) -> MilvusAccess:
        return MilvusAccess(self.milvus_token, self.milvus_ca)

    def index_spec(self) -> IndexSpec:
        return IndexSpec(self.index, self.hnsw_m, self.hnsw_ef_construction, self.exact_below)


async def create_server(config: RetrieverSettings, port: int = 0) -> tuple[ManagedServer, int]:
    """Serve the retriever on ``port``; health turns SERVING once Milvus answers."""
    if not config.milvus_uri.startswith(SERVER_SCHEMES):
        raise settings.SettingsError(
            "MILVUS_URI must be a Milvus server address (http://host:port); a Lite database "
            "file can be opened by one process only, so the retriever never opens one itself "
            "(`movierec up` runs milvus-lite as a loopback server instead)")
    store = MilvusVectors(config.milvus_uri, timeout=config.call_timeout,
                          search_ef=config.hnsw_ef, access=config.access())
    engine = SearchEngine(store, config.registry_ttl,
                          BatchedSearch(store, config.batch_max, config.batch_exclude),
                          config.memory_below)
    spec = ServiceSpec(SERVICE, RetrieverServicer(engine, config.call_timeout),
                       retriever_pb2_grpc.add_RetrieverServicer_to_server)
    server, bound = await build_server("retriever", [spec], port,
                                       settings.server_settings())
    probe_timeout = max(config.health_interval, config.call_timeout)
    start_task(server, follow_health(server, lambda: engine.ready(probe_timeout),
                                     config.health_interval, "milvus"))
    if config.memory_below:
        start_task(server, engine.keep_warm(models.NAMES, config.health_interval,
                                            probe_timeout))

    server.on_stop(store.aclose)
    server.on_stop(engine.memory.close)
    return server, bound


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main("retriever", RetrieverSettings, create_server, argv or [])
