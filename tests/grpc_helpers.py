"""Helpers shared by the in-process service tests."""

from __future__ import annotations

import asyncio
import time

from grpc_health.v1 import health_pb2, health_pb2_grpc


async def wait_serving(channel, timeout: float = 30.0) -> None:
    """Poll the health service on ``channel`` until it reports SERVING."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the service never became SERVING")
