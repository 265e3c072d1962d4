"""The one list of movierec's processes: name, code, ports, variables, health name, image.

The CLI (``movierec serve NAME``), the local runtime (``movierec up``), every service's
settings defaults, the deploy tests and the manifest checks read it; adding a service is
one entry here plus its folder. :data:`SERVICES` are the stack; :data:`TOOLS` (the echo
benchmark server) are served on request only. Pure data: modules are named, never imported, so this
shared module stays below the services and apps it describes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    """One process of the stack."""

    name: str                 # ``movierec serve NAME``, log file, Kubernetes app name
    module: str               # has ``main(argv)``, ``create_server`` and ``settings_class``
    settings_class: str       # the typed settings dataclass in ``module``
    env_prefix: str           # ``<PREFIX>_PORT``, ``<PREFIX>_ADDR``, ``<PREFIX>_METRICS_PORT``
    port: int                 # default port (gRPC, or HTTP for the web facade)
    metrics_port: int         # default Prometheus port
    health: str               # gRPC health service name; "" for the HTTP facade
    folder: str               # source folder
    stores: tuple[str, ...] = ()      # stores it needs: postgres, redis, milvus
    callers: tuple[str, ...] = ()     # who may call it (NetworkPolicy)
    protocol: str = "grpc"

    @property
    def port_env(self) -> str:
        return f"{self.env_prefix}_PORT"

    @property
    def metrics_env(self) -> str:
        return f"{self.env_prefix}_METRICS_PORT"

    @property
    def addr_env(self) -> str:
        return f"{self.env_prefix}_ADDR"

    @property
    def address(self) -> str:
        """Default address other processes use to reach it."""
        return f"127.0.0.1:{self.port}"

    @property
    def image(self) -> str:
        """Image name (deploy/Containerfile, ``make images``); tagged with the version."""
        return f"movierec/{self.name}"

    @property
    def entry(self) -> str:
        """``module:function`` of ``movierec serve NAME``."""
        return f"{self.module}:main"


CATALOG = Service("catalog", "movierec.services.catalog.server", "CatalogSettings", "CATALOG",
                  50053, 9463, "movierec.catalog.v1.Catalog", "services/catalog",
                  stores=("postgres",), callers=("gateway",))
RETRIEVER = Service("retriever", "movierec.services.retriever.server", "RetrieverSettings",
                    "RETRIEVER", 50052, 9462, "movierec.retriever.v1.Retriever",
                    "services/retriever", stores=("milvus",), callers=("gateway",))
EMBEDDER = Service("embedder", "movierec.services.embedder.server", "EmbedderSettings",
                   "EMBEDDER", 50051, 9461, "movierec.embedder.v1.Embedder",
                   "services/embedder", callers=("gateway",))
GATEWAY = Service("gateway", "movierec.apps.gateway.server", "GatewaySettings", "GATEWAY",
                  50050, 9460, "movierec.gateway.v1.Gateway", "gateway", stores=("redis",),
                  callers=("web", "ghz"))
WEB = Service("web", "movierec.apps.web.server", "WebSettings", "WEB", 8080, 9464, "", "web",
              protocol="http")

#: The image that runs ``movierec train`` and the load jobs (the services' images do not).
TRAINER_IMAGE = "movierec/trainer"

#: The bare echo server: the floor of one Python gRPC hop in the benchmarks.
ECHO = Service("echo", "movierec.server.echo", "EchoSettings", "ECHO", 50060, -1,
               "movierec.echo.v1.Echo", "movierec/server")

#: In start order: each one's dependencies come before it.
SERVICES: tuple[Service, ...] = (CATALOG, RETRIEVER, EMBEDDER, GATEWAY, WEB)
BY_NAME = {s.name: s for s in SERVICES}
#: Processes ``movierec serve NAME`` runs on request only: never started by ``movierec
#: up``, without image or Kubernetes manifest.
TOOLS: tuple[Service, ...] = (ECHO,)


def get(name: str) -> Service:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(BY_NAME)}") from None
