"""Server factory and lifecycle shared by every service.

``build_server`` returns ``(server, port)``: a started :class:`ManagedServer` with
the gRPC health service (every registered service NOT_SERVING until
``server.readiness.set_serving(True)``), server reflection, the interceptor (with the
process' ``admit`` hook, if any), OpenTelemetry's (behind its sampling gate) before it
when tracing is on (:mod:`movierec.tracing`) and message-size limits; binding port 0 picks a free
port, which is what tests do. With ``MOVIEREC_TLS_CERT`` the port speaks TLS only (mTLS
with ``MOVIEREC_TLS_CA``, :mod:`movierec.security.tls`); ``MOVIEREC_HEALTH_PORT`` adds a
plaintext port serving nothing but the health service, for probes that cannot speak
TLS (Kubernetes' gRPC probes).
``run_until_signal`` serves until SIGTERM/SIGINT, then reports NOT_SERVING, drains
in-flight calls for the grace period and runs the server's cleanups (pools, clients).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from movierec.security import tls
from movierec.server import metrics
from movierec.server.interceptor import Admit, ServiceInterceptor
from movierec.settings import ServerSettings

log = logging.getLogger(__name__)
#: how long a stopping server waits for a background task to end before cancelling it again
RECANCEL_SECONDS = 0.5
#: Health service name that stays SERVING while the process lives (liveness probes):
#: readiness ("" and each service) follows dependencies, and restarting a pod because
#: its database is down would not help.
LIVENESS_SERVICE = "liveness"


@dataclass(frozen=True)
class ServiceSpec:
    """One gRPC service to host: its full name, servicer and generated registrar."""

    name: str
    servicer: Any
    register: Callable[[Any, grpc.aio.Server], None]


def _passthrough(data: bytes) -> bytes:
    return data


def registrar(service: ServiceDescriptor, raw: Sequence[str] = ()
              ) -> Callable[[Any, grpc.aio.Server], None]:
    """What a generated ``add_<Service>Servicer_to_server`` does, from the service's
    descriptor, except that the methods named in ``raw`` answer with bytes they
    serialized themselves (the gateway serialises a page once and caches those bytes)."""
    def register(servicer: Any, server: grpc.aio.Server) -> None:
        handlers = {}
        for method in service.methods:
            reply = message_factory.GetMessageClass(method.output_type)
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                getattr(servicer, method.name),
                request_deserializer=message_factory.GetMessageClass(
                    method.input_type).FromString,
                response_serializer=_passthrough if method.name in raw
                else reply.SerializeToString)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.full_name, handlers),))
        server.add_registered_method_handlers(service.full_name, handlers)
    return register


class Readiness:
    """Health status of the services in one process (overall name "" included)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.servicer = health.aio.HealthServicer()
        self.names = ["", *names]
        self.serving = False

    async def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in self.names:
            await self.servicer.set(name, status)
            if name:
                metrics.SERVING.labels(name).set(1 if serving else 0)
        self.serving = serving

    async def shutdown(self) -> None:
        await self.servicer.enter_graceful_shutdown()
        for name in self.names[1:]:
            metrics.SERVING.labels(name).set(0)
        self.serving = False


def server_options(settings: ServerSettings) -> list[tuple[str, Any]]:
    return [("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0)]


@dataclass
class ManagedServer:
    """A started gRPC server with its health state and the resources it must close."""

    grpc: grpc.aio.Server
    readiness: Readiness
    grace: float
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def on_stop(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        self.cleanups.append(cleanup)

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, drain for ``grace`` seconds, then close resources newest first."""
        await self.readiness.shutdown()
        await self.grpc.stop(self.grace if grace is None else grace)
        for cleanup in reversed(self.cleanups):
            await cleanup()
        self.cleanups.clear()


def _bind(server: grpc.aio.Server, host: str, port: int,
          credentials: grpc.ServerCredentials | None) -> int:
    address = f"{host}:{port}"
    bound = (server.add_secure_port(address, credentials) if credentials is not None
             else server.add_insecure_port(address))
    if bound == 0:
        raise OSError(f"could not bind {address}")
    return bound


async def _health_only(readiness: Readiness, settings: ServerSettings) -> grpc.aio.Server:
    """A plaintext server answering only the health service of ``readiness``."""
    server = grpc.aio.server(options=server_options(settings))
    health_pb2_grpc.add_HealthServicer_to_server(readiness.servicer, server)
    bound = _bind(server, settings.host, settings.health_port, None)
    await server.start()
    log.info("health port", extra={"health_port": bound})
    return server


async def build_server(process: str, services: Sequence[ServiceSpec], port: int,
                       settings: ServerSettings, admit: Admit | None = None
                       ) -> tuple[ManagedServer, int]:
    """Create and start a server hosting ``services``; health starts NOT_SERVING."""
    credentials = tls.server_credentials(settings)
    server = grpc.aio.server(interceptors=[ServiceInterceptor(process, admit)],
                             options=server_options(settings))
    readiness = Readiness([s.name for s in services])
    for spec in services:
        spec.register(spec.servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(readiness.servicer, server)
    names = [s.name for s in services]
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME], server)
    bound = _bind(server, settings.host, port, credentials)
    await readiness.set_serving(False)
    await readiness.servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    managed = ManagedServer(server, readiness, settings.grace_seconds)
    if settings.health_port >= 0:
        health_server = await _health_only(readiness, settings)
        managed.on_stop(lambda: health_server.stop(0))
    await server.start()
    log.info("listening", extra={"server": process, "port": bound,
                                 "tls": "off" if credentials is None else
                                 "mtls" if settings.tls_ca else "tls"})
    return managed, bound


async def run_until_signal(server: ManagedServer) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping", extra={"grace_seconds": server.grace})
    await server.stop()
    log.info("stopped")


async def follow_health(server: ManagedServer, probe: Callable[[], Awaitable[bool]],
                        interval: float, name: str, *, down_after: int = 1,
                        up_after: int = 1) -> None:
    """Forever: run ``probe`` every ``interval`` s and publish SERVING/NOT_SERVING from it.

    With hysteresis: the status flips only after ``down_after`` failed (or ``up_after``
    good) probes in a row, so one slow probe does not take every replica out at once.
    Start the returned coroutine as a task and register its cancellation with
    ``server.on_stop``; a probe that raises counts as failed.
    """
    streak = 0
    while True:
        try:
            ready = await probe()
        except Exception as exc:  # noqa: BLE001 - a failing probe means not ready
            log.warning("%s probe failed: %s", name, exc)
            ready = False
        streak = streak + 1 if ready != server.readiness.serving else 0
        if streak >= (up_after if ready else down_after):
            log.log(logging.INFO if ready else logging.WARNING, "%s %s", name,
                    "ready: SERVING" if ready else "not ready: NOT_SERVING")
            await server.readiness.set_serving(ready)
            streak = 0
        await asyncio.sleep(interval)


def start_task(server: ManagedServer, coroutine: Awaitable[None]) -> asyncio.Task:
    """Run ``coroutine`` in the background until the server stops.

    The stop cancels it again until it ends: one cancellation can be lost (Python 3.11's
    ``asyncio.wait_for``, and any library code built on it, returns a result that arrived
    in the step that cancelled it), and a loop that missed it would hold the stop forever."""
    task = asyncio.ensure_future(coroutine)

    async def cancel() -> None:
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
        with contextlib.suppress(asyncio.CancelledError):
            task.result()
    server.on_stop(cancel)
    return task
