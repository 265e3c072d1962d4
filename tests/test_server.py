"""Server plumbing: health, reflection, error mapping, request ids, metrics, SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from movierec import errors, settings
from movierec.echo.v1 import echo_pb2, echo_pb2_grpc
from movierec.logs import request_id
from movierec.server import client, metrics
from movierec.server.client import REQUEST_ID_KEY
from movierec.server.echo import SERVICE, create_server
from movierec.server.factory import ServiceSpec, build_server, start_task
from movierec.stack.process import free_port


class Faulty(echo_pb2_grpc.EchoServicer):
    """Raises whatever the payload names, to exercise the error mapping."""

    seen_ids: list[str] = []

    async def Echo(self, request, context):  # noqa: N802
        Faulty.seen_ids.append(request_id.get())
        kind = request.payload.decode()
        if kind == "invalid":
            raise errors.InvalidArgument("payload", "must not be 'invalid'")
        if kind == "missing":
            raise errors.NotFound("no such thing")
        if kind == "down":
            raise errors.Unavailable("database unreachable")
        if kind == "boom":
            raise RuntimeError("secret internals")
        return echo_pb2.EchoResponse(payload=request.payload)


async def _health(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        stub = health_pb2_grpc.HealthStub(chan)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return reply.status


def test_health_starts_not_serving_until_ready() -> None:
    async def scenario():
        spec = ServiceSpec(SERVICE, Faulty(), echo_pb2_grpc.add_EchoServicer_to_server)
        server, port = await build_server("t", [spec], 0, settings.ServerSettings())
        try:
            assert await _health(port) == health_pb2.HealthCheckResponse.NOT_SERVING
            await server.readiness.set_serving(True)
            assert await _health(port, SERVICE) == health_pb2.HealthCheckResponse.SERVING
            assert _serving_gauge() == 1            # movierec_serving follows health
            await server.readiness.set_serving(False)
            assert _serving_gauge() == 0
        finally:
            await server.stop(0)
    asyncio.run(scenario())


def test_a_background_loop_that_misses_a_cancellation_still_ends_with_the_server() -> None:
    """A loop that lost one cancellation (Python 3.11's ``asyncio.wait_for`` loses it when
    its call completes in the step that cancels it) does not hold the server's stop
    forever: the stop cancels again until the task ends (a retriever test hung 300 s)."""
    rounds: list[str] = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if "swallowed" in rounds:
                    raise
                rounds.append("swallowed")

    async def scenario():
        spec = ServiceSpec(SERVICE, Faulty(), echo_pb2_grpc.add_EchoServicer_to_server)
        server, _ = await build_server("t", [spec], 0, settings.ServerSettings())
        task = start_task(server, stubborn())
        await asyncio.sleep(0.05)
        stop = asyncio.ensure_future(server.stop(0))
        await asyncio.wait({stop}, timeout=10)   # without the fix: never
        ended = stop.done()
        if not ended:   # end the test's loop anyway
            task.cancel()
            await stop
        return ended, task
    ended, task = asyncio.run(scenario())
    assert ended and rounds == ["swallowed"] and task.cancelled()


def _serving_gauge() -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("movierec_serving", {"grpc_service": SERVICE})


def test_reflection_lists_the_service() -> None:
    async def scenario():
        server, port = await create_server()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
                stub = reflection_pb2_grpc.ServerReflectionStub(chan)
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                async for reply in stub.ServerReflectionInfo(iter([request])):
                    return {s.name for s in reply.list_services_response.service}
        finally:
            await server.stop(0)
    names = asyncio.run(scenario())
    assert SERVICE in names and "grpc.health.v1.Health" in names


@pytest.mark.parametrize(("payload", "code", "detail"), [
    ("invalid", grpc.StatusCode.INVALID_ARGUMENT, "payload: must not be 'invalid'"),
    ("missing", grpc.StatusCode.NOT_FOUND, "no such thing"),
    ("down", grpc.StatusCode.UNAVAILABLE, "database unreachable"),
    ("boom", grpc.StatusCode.INTERNAL, "internal error"),
])
def test_errors_map_to_codes_in_one_place(payload: str, code, detail: str) -> None:
    async def scenario():
        spec = ServiceSpec(SERVICE, Faulty(), echo_pb2_grpc.add_EchoServicer_to_server)
        server, port = await build_server("t", [spec], 0, settings.ServerSettings())
        try:
            async with client.channel(f"127.0.0.1:{port}") as chan:
                stub = echo_pb2_grpc.EchoStub(chan)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Echo(echo_pb2.EchoRequest(payload=payload.encode()), timeout=2)
                return info.value
        finally:
            await server.stop(0)
    logging.getLogger("movierec.server.status").disabled = True
    error = asyncio.run(scenario())
    assert error.code() == code and error.details() == detail
    assert "secret" not in error.details()


def test_request_id_propagates_and_metrics_count() -> None:
    async def scenario():
        spec = ServiceSpec(SERVICE, Faulty(), echo_pb2_grpc.add_EchoServicer_to_server)
        server, port = await build_server("rid", [spec], 0, settings.ServerSettings())
        try:
            async with client.channel(f"127.0.0.1:{port}") as chan:
                stub = echo_pb2_grpc.EchoStub(chan)
                token = request_id.set("abc123")
                await client.call(stub.Echo, echo_pb2.EchoRequest(payload=b"ok"), timeout=2)
                request_id.reset(token)
                await stub.Echo(echo_pb2.EchoRequest(payload=b"ok"), timeout=2,
                                metadata=((REQUEST_ID_KEY, "given"),))
        finally:
            await server.stop(0)
    Faulty.seen_ids.clear()
    asyncio.run(scenario())
    assert Faulty.seen_ids == ["abc123", "given"]
    metrics_port = metrics.start(0)
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    assert 'movierec_rpc_total{code="OK",method="Echo",service="rid"} 2.0' in body


def test_retry_only_idempotent_calls_and_respects_deadline() -> None:
    async def scenario(idempotent: bool) -> float:
        port = free_port()
        async with client.channel(f"127.0.0.1:{port}") as chan:
            stub = echo_pb2_grpc.EchoStub(chan)
            start = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.call(stub.Echo, echo_pb2.EchoRequest(), timeout=0.5,
                                  idempotent=idempotent)
            assert info.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                         grpc.StatusCode.DEADLINE_EXCEEDED)
            return time.monotonic() - start
    assert asyncio.run(scenario(True)) < 1.0
    assert asyncio.run(scenario(False)) < 1.0


class Relay(echo_pb2_grpc.EchoServicer):
    """Forwards every call to ``target`` (idempotent), like the gateway to a service."""

    def __init__(self, target: str) -> None:
        self.target = target

    async def Echo(self, request, context):  # noqa: N802
        async with client.channel(self.target) as chan:
            return await client.call(echo_pb2_grpc.EchoStub(chan).Echo, request, timeout=1,
                                     idempotent=True)


class Down(echo_pb2_grpc.EchoServicer):
    calls = 0

    async def Echo(self, request, context):  # noqa: N802
        Down.calls += 1
        raise errors.Unavailable("still starting")


def test_a_chain_attempts_a_call_at_most_twice_end_to_end() -> None:
    async def scenario() -> int:
        leaf, leaf_port = await build_server("leaf", [ServiceSpec(
            SERVICE, Down(), echo_pb2_grpc.add_EchoServicer_to_server)], 0,
            settings.ServerSettings())
        relays, target = [], f"127.0.0.1:{leaf_port}"
        for name in ("inner", "outer"):
            relay, port = await build_server(name, [ServiceSpec(
                SERVICE, Relay(target), echo_pb2_grpc.add_EchoServicer_to_server)], 0,
                settings.ServerSettings())
            relays.append(relay)
            target = f"127.0.0.1:{port}"
        try:
            async with client.channel(target) as chan:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await client.call(echo_pb2_grpc.EchoStub(chan).Echo, echo_pb2.EchoRequest(),
                                      timeout=2, idempotent=True)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            return Down.calls
        finally:
            for server in (*relays, leaf):
                await server.stop(0)
    Down.calls = 0
    assert asyncio.run(scenario()) == 2


def test_sigterm_drains_and_exits_cleanly(tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "MOVIEREC_GRACE_SECONDS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "movierec.cli", "serve", "echo", "--port",
                             str(port)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if asyncio.run(_health(port)) == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.aio.AioRpcError:
                time.sleep(0.1)
        else:
            pytest.fail("echo server never became SERVING")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        proc.kill()
    lines = proc.stdout.read().splitlines()
    assert any('"msg": "stopped"' in line for line in lines), lines
    assert all(line.startswith("{") for line in lines if line)


def test_liveness_is_serving_while_readiness_is_not() -> None:
    from movierec.server.factory import LIVENESS_SERVICE

    async def scenario():
        spec = ServiceSpec(SERVICE, Faulty(), echo_pb2_grpc.add_EchoServicer_to_server)
        server, port = await build_server("t", [spec], 0, settings.ServerSettings())
        try:
            return await _health(port), await _health(port, LIVENESS_SERVICE)
        finally:
            await server.stop(0)
    ready, alive = asyncio.run(scenario())
    assert ready == health_pb2.HealthCheckResponse.NOT_SERVING
    assert alive == health_pb2.HealthCheckResponse.SERVING


def test_serve_starts_a_service_with_one_blas_thread_unless_told(monkeypatch) -> None:
    from movierec import cli
    for variable in cli.SERVICE_THREAD_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    seen: dict[str, str | None] = {}

    def fake_service(rest):
        seen.update({v: os.environ.get(v) for v in cli.SERVICE_THREAD_VARIABLES})
        return 0
    monkeypatch.setattr(cli, "resolve", lambda spec: fake_service)
    assert cli.main(["serve", "echo"]) == 0
    assert seen == {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "1"}
