"""A bare gRPC echo service: the floor for one Python gRPC hop in the benchmarks.

It goes through the same factory as the real services (health, reflection,
interceptor), so the difference to it is what our own code costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from movierec import settings
from movierec.echo.v1 import echo_pb2, echo_pb2_grpc
from movierec.registry import ECHO
from movierec.server.factory import ManagedServer, ServiceSpec, build_server
from movierec.server.runner import serve_main

SERVICE = echo_pb2.DESCRIPTOR.services_by_name["Echo"].full_name


@dataclass(frozen=True)
class EchoSettings:
    port: int = settings.setting(ECHO.port_env, ECHO.port, minimum=0, maximum=65535,
                                 doc="echo benchmark server port")
    metrics_port: int = settings.setting(ECHO.metrics_env, ECHO.metrics_port, minimum=-1,
                                         maximum=65535,
                                         doc="echo metrics port (-1 off, 0 free port)")


class EchoServicer(echo_pb2_grpc.EchoServicer):
    async def Echo(self, request, context):  # noqa: N802 - gRPC method name
        return echo_pb2.EchoResponse(payload=request.payload)


async def create_server(config: EchoSettings | None = None,
                        port: int = 0) -> tuple[ManagedServer, int]:
    spec = ServiceSpec(SERVICE, EchoServicer(), echo_pb2_grpc.add_EchoServicer_to_server)
    server, bound = await build_server(ECHO.name, [spec], port, settings.server_settings())
    await server.readiness.set_serving(True)
    return server, bound


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main(ECHO.name, EchoSettings, create_server, argv or [])
