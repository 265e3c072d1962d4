"""``movierec up`` (what ``make run`` calls): the whole stack on this machine.

Starts the stores (or uses the ones the environment names), prepares data, models,
catalog and vectors (:mod:`movierec.runtime.prepare`), then starts every service as
its own ``movierec serve NAME`` process on a fixed loopback port, waits for each to
report SERVING through the gRPC health service, prints sample recommendations and
how to call the gateway, and serves until Ctrl-C/SIGTERM, then stops everything it
started.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from movierec.errors import Unavailable
from movierec.runtime.prepare import prepare
from movierec.runtime.process import runtime_root, stop_process
from movierec.runtime.stack import LocalStores


@dataclass(frozen=True)
class ServiceProcess:
    """A service ``up`` runs: its module, port variable and default port."""

    name: str
    module: str
    port_env: str
    port: int
    stores: tuple[str, ...]


SERVICES = (
    ServiceProcess("catalog", "services.catalog.server", "CATALOG_PORT", 50053, ("postgres",)),
    ServiceProcess("retriever", "services.retriever.server", "RETRIEVER_PORT", 50052,
                   ("milvus",)),
    ServiceProcess("embedder", "services.embedder.server", "EMBEDDER_PORT", 50051, ()),
    ServiceProcess("gateway", "gateway.server", "GATEWAY_PORT", 50050, ("redis",)),
)


def available(service: ServiceProcess) -> bool:
    try:
        return importlib.util.find_spec(service.module) is not None
    except ModuleNotFoundError:
        return False


def _health(port: int) -> int:
    async def check() -> int:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            stub = health_pb2_grpc.HealthStub(chan)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            return reply.status
    try:
        return asyncio.run(check())
    except grpc.aio.AioRpcError:
        return health_pb2.HealthCheckResponse.UNKNOWN


def wait_serving(proc: subprocess.Popen, name: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"{name} exited with code {proc.returncode}")
        if _health(port) == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(0.2)
    raise Unavailable(f"{name} was not SERVING on port {port} after {timeout:.0f}s")


def launch(service: ServiceProcess, env: dict[str, str], log_dir: Path) -> subprocess.Popen:
    """Start ``movierec serve NAME`` with ``env``, its output appended to a log file."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"{service.name}.log").open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "movierec.cli", "serve", service.name],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def start_services(env: dict[str, str], timeout: float) -> list[subprocess.Popen]:
    procs: list[subprocess.Popen] = []
    logs = runtime_root() / "logs"
    for service in SERVICES:
        if not available(service):
            print(f"  {service.name:9s} missing: {service.module} is not built yet")
            continue
        port = int(env.setdefault(service.port_env, str(service.port)))
        proc = launch(service, env, logs)
        procs.append(proc)
        wait_serving(proc, service.name, port, timeout)
        print(f"  {service.name:9s} SERVING on 127.0.0.1:{port}  (log {logs / service.name}.log)")
    return procs


def demo(env: dict[str, str]) -> None:
    """Show what the stack answers, the way the seed system printed it."""
    from movierec import recommend

    gateway = f"127.0.0.1:{env.get('GATEWAY_PORT', '50050')}"
    for title, argv in (("profile: age 25, F, occupation 4 (college/grad student)",
                         ["--age", "25", "--gender", "F", "--occupation", "4", "--top", "5"]),
                        ("liked: Toy Story, Star Wars, Fargo", ["--liked", "1,260,608", "--top",
                                                                "5"])):
        print(f"\n{title}")
        recommend.main([*argv, "--gateway", gateway])
    print(f"\ntry:  movierec recommend --user 42 --top 5 --gateway {gateway}")
    print(f"      grpcurl -plaintext -d '{{\"user_id\": 42}}' {gateway} "
          "movierec.gateway.v1.Gateway/Recommend")
    print(f"      ghz --insecure --config loadtest/ghz/gateway_recommend_profile.json {gateway}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="movierec up", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--once", action="store_true", help="start, show, then stop")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per service")
    args = parser.parse_args(argv)
    stores = LocalStores()
    procs: list[subprocess.Popen] = []
    try:
        addresses = stores.start()
        print("stores:")
        for env_name, address in addresses.items():
            print(f"  {env_name:12s} {address}")
        prepare(addresses, args.dataset)
        env = {**os.environ, **addresses}
        print("services:")
        procs = start_services(env, args.timeout)
        if all(available(s) for s in SERVICES):
            from web.launch import start_web

            env.setdefault("WEB_PORT", "8080")
            web, url = start_web(env, runtime_root() / "logs")
            procs.append(web)
            demo(env)
            print(f"web page and JSON API: {url}/  (OpenAPI docs: {url}/docs)\n")
        if not args.once:
            print("serving; Ctrl-C stops everything", flush=True)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(procs):
            stop_process(proc, 20)
        stores.stop()
        print("stopped")
    return 0
