"""``movierec up`` (what ``make run`` calls): the whole stack on this machine.

Starts the stores (or uses the ones the environment names), prepares data, models,
catalog and vectors (:mod:`movierec.stack.prepare`), then starts every service as
its own ``movierec serve NAME`` process on a fixed loopback port, waits for each to
report SERVING through the gRPC health service, prints sample recommendations and
how to call the gateway, and serves until Ctrl-C/SIGTERM, then stops everything it
started. The first SIGTERM or SIGINT, at any step, ends that step (a lock-free handler
raises KeyboardInterrupt once, :class:`movierec.signals.Shutdown`); every later one
is ignored, so it cannot cut the stop sequence short and leave a process behind.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from movierec import recommend, registry, settings
from movierec.apps.gateway.server import security_summary
from movierec.errors import MovierecError, Unavailable
from movierec.registry import Service
from movierec.security import tls
from movierec.server import client
from movierec.signals import Shutdown, deferred
from movierec.stack.prepare import prepare
from movierec.stack.process import runtime_root, stop_process
from movierec.stack.stores import LocalStores, ports_to_check
from movierec.stack.supervise import Supervisor, process_alive
from movierec.stack.web import start_web

GRPC_SERVICES = tuple(s for s in registry.SERVICES if s.protocol == "grpc")


def available(service: Service) -> bool:
    try:
        return importlib.util.find_spec(service.module) is not None
    except ModuleNotFoundError:
        return False


def _port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` cannot be bound the way the servers bind it: with SO_REUSEADDR
    (as gRPC, uvicorn and the stores do), so a port whose last connections linger in
    TIME_WAIT (right after a load run) is free, and one with a listener is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(env: dict[str, str]) -> None:
    """Fail before anything starts when a port ``up`` needs is taken, naming its variable."""
    taken = []
    for service in registry.SERVICES:
        for variable, default in ((service.port_env, service.port),
                                  (service.metrics_env, service.metrics_port)):
            port = int(env.get(variable) or default)
            if port > 0 and _port_taken(port):
                taken.append(f"{variable}={port}")
    taken += [f"{variable}={port}" for variable, port in ports_to_check(env).items()
              if _port_taken(port)]
    if taken:
        raise Unavailable("ports already in use: " + ", ".join(taken) + "; set these "
                          "variables to free ports (or stop what holds them) and run again")


def _health(port: int, credentials: grpc.ChannelCredentials | None = None) -> int:
    async def check() -> int:
        async with client.channel(f"127.0.0.1:{port}", credentials=credentials) as chan:
            stub = health_pb2_grpc.HealthStub(chan)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            return reply.status
    try:
        return asyncio.run(check())
    except grpc.aio.AioRpcError:
        return health_pb2.HealthCheckResponse.UNKNOWN


def wait_serving(proc: subprocess.Popen, name: str, port: int, timeout: float,
                 env: dict[str, str] | None = None) -> None:
    """Wait until ``name`` is SERVING (over TLS when ``env`` configures it)."""
    credentials = tls.channel_credentials(settings.server_settings(env or {}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"{name} exited with code {proc.returncode}")
        if _health(port, credentials) == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(0.2)
    raise Unavailable(f"{name} was not SERVING on port {port} after {timeout:.0f}s")


def launch(service: Service, env: dict[str, str], log_dir: Path) -> subprocess.Popen:
    """Start ``movierec serve NAME`` with ``env``, its output appended to a log file."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"{service.name}.log").open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "movierec.cli", "serve", service.name],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


class Running:
    """The service processes ``up`` started, by name: what the supervisor restarts and
    what ``stop`` ends. A process is recorded as soon as it exists, so a failure while
    it starts still stops it."""

    def __init__(self, env: dict[str, str], timeout: float) -> None:
        self.env = env
        self.timeout = timeout
        self.logs = runtime_root() / "logs"
        self.procs: dict[str, subprocess.Popen] = {}
        self.web_url = ""

    def start(self, service: Service) -> None:
        if service.protocol == "http":
            self.env.setdefault(service.port_env, str(service.port))
            self.procs[service.name], self.web_url = start_web(self.env, self.logs)
            return
        port = int(self.env.setdefault(service.port_env, str(service.port)))
        with deferred():        # a stop signal during the start still finds the process
            self.procs[service.name] = launch(service, self.env, self.logs)
        wait_serving(self.procs[service.name], service.name, port, self.timeout, self.env)

    def start_all(self) -> None:
        for service in registry.SERVICES:
            if not available(service):
                print(f"  {service.name:9s} missing: {service.module} is not built yet")
                continue
            self.start(service)
            where = self.web_url or f"127.0.0.1:{self.env[service.port_env]}"
            print(f"  {service.name:9s} ready at {where}  (log {self.logs / service.name}.log)")

    def watch(self, supervisor: Supervisor) -> None:
        for name in self.procs:
            service = registry.get(name)
            supervisor.watch(name, lambda n=name: process_alive(self.procs[n]),
                             lambda s=service: self.start(s))

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            stop_process(proc, 20)


def watch_stores(stores: LocalStores, supervisor: Supervisor) -> None:
    """Restart a local store server that dies (Redis, PostgreSQL, Milvus)."""
    for name, server in stores.started.items():
        supervisor.watch(name, lambda s=server: store_alive(s), server.start)


def store_alive(server) -> bool:
    proc = getattr(server, "proc", None)
    return process_alive(proc) if proc is not None else bool(server.running())


def demo(env: dict[str, str]) -> None:
    """Show what the stack answers, the way the seed system printed it."""
    gateway = f"127.0.0.1:{env.get('GATEWAY_PORT', '50050')}"
    for title, argv in (("profile: age 25, F, occupation 4 (college/grad student)",
                         ["--age", "25", "--gender", "F", "--occupation", "4", "--top", "5"]),
                        ("liked: Toy Story, Star Wars, Fargo", ["--liked", "1,260,608", "--top",
                                                                "5"]),
                        ("a new user: that profile and a first like, Star Wars",
                         ["--age", "25", "--gender", "F", "--occupation", "4", "--liked", "260",
                          "--top", "5"])):
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
    # Ctrl-C stops everything even when `up` was started in the background, where the
    # shell hands it SIGINT ignored (the services, which handle it, would die and be
    # restarted instead).
    shutdown = Shutdown(interrupt=True).install()
    stores = LocalStores()
    running = Running(dict(os.environ), args.timeout)
    try:
        check_ports(dict(os.environ))
        addresses = stores.start()
        print("stores:")
        for env_name, address in addresses.items():
            print(f"  {env_name:12s} {address}")
        prepare(addresses, args.dataset)
        running.env.update(addresses)
        print("services:")
        running.start_all()
        print("\n".join(["callers:", *(f"  {line}" for line in security_summary(running.env))]))
        demo(running.env)
        if running.web_url:
            print(f"web page and JSON API: {running.web_url}/  "
                  f"(OpenAPI docs: {running.web_url}/docs)\n")
        trace_file = settings.server_settings(running.env).trace_file
        if trace_file:
            print(f"traces: {trace_file}  (one request's waterfall: movierec trace "
                  f"waterfall --file {trace_file} --trace-id REQUEST_ID --out w.png)\n")
        if not args.once:
            serve(stores, running)
    except KeyboardInterrupt:
        pass
    except MovierecError as exc:
        print(f"movierec up: {exc}", file=sys.stderr)
        return 1
    finally:
        shutdown.stopping()
        try:
            running.stop()
        finally:
            stores.stop()
        print("stopped")
    return 0


def serve(stores: LocalStores, running: Running) -> None:
    """Keep everything up until Ctrl-C or SIGTERM (or a process that keeps dying)."""
    supervisor = Supervisor()
    watch_stores(stores, supervisor)
    running.watch(supervisor)
    print("serving; Ctrl-C stops everything", flush=True)
    supervisor.run()
