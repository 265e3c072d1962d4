"""The ghz-compatible load driver: config parsing, bounded runs, ghz's report layout."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from movierec import loadtest, settings
from movierec.echo.v1 import echo_pb2, echo_pb2_grpc
from movierec.server.echo import SERVICE, create_server
from movierec.server.factory import ServiceSpec, build_server


def _run(config: dict) -> dict:
    async def main():
        server, port = await create_server()
        try:
            return loadtest.summary(await loadtest.run({**config,
                                                        "host": f"127.0.0.1:{port}"}))
        finally:
            await server.stop(0)
    return asyncio.run(main())


def test_counts_every_call_and_round_robins_data() -> None:
    report = _run({"call": "movierec.echo.v1.Echo.Echo", "total": 120, "concurrency": 4,
                   "data": [{"payload": "YQ=="}, {"payload": "Yg=="}]})
    assert report["count"] == 120 and report["statusCodeDistribution"] == {"OK": 120}
    assert report["rps"] > 0 and report["fastest"] <= report["average"] <= report["slowest"]
    latencies = [d["latency"] for d in report["latencyDistribution"]]
    assert latencies == sorted(latencies) and [d["percentage"] for d in
                                               report["latencyDistribution"]][-1] == 99


class Recording(echo_pb2_grpc.EchoServicer):
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    async def Echo(self, request, context):  # noqa: N802
        self.payloads.append(request.payload)
        await asyncio.sleep(0.002)
        return echo_pb2.EchoResponse(payload=request.payload)


def test_data_is_one_round_robin_shared_by_all_workers() -> None:
    recording = Recording()
    data = [{"payload": base64.b64encode(f"r{i}".encode()).decode()} for i in range(40)]

    async def main():
        spec = ServiceSpec(SERVICE, recording, echo_pb2_grpc.add_EchoServicer_to_server)
        server, port = await build_server("rr", [spec], 0, settings.ServerSettings())
        try:
            return await loadtest.run({"call": "movierec.echo.v1.Echo.Echo", "total": 80,
                                       "concurrency": 8, "data": data,
                                       "host": f"127.0.0.1:{port}"})
        finally:
            await server.stop(0)
    asyncio.run(main())
    assert sorted(recording.payloads) == sorted([f"r{i}".encode() for i in range(40)] * 2)
    assert recording.payloads[:8] != [b"r0"] * 8   # not every worker starting at data[0]


def test_errors_count_in_rps_but_not_in_latency() -> None:
    async def main():  # a server that takes 2 ms, so a 1 us deadline always runs out
        spec = ServiceSpec(SERVICE, Recording(), echo_pb2_grpc.add_EchoServicer_to_server)
        server, port = await build_server("slow", [spec], 0, settings.ServerSettings())
        try:
            return loadtest.summary(await loadtest.run({
                "call": "movierec.echo.v1.Echo/Echo", "total": 30, "concurrency": 3,
                "timeout": "1us", "host": f"127.0.0.1:{port}"}))
        finally:
            await server.stop(0)
    report = asyncio.run(main())
    assert report["count"] == 30
    assert report["statusCodeDistribution"].get("DEADLINE_EXCEEDED", 0) > 0
    assert any("DEADLINE_EXCEEDED" in e for e in report["errorDistribution"])


def test_duration_bounds_the_run() -> None:
    report = _run({"call": "movierec.echo.v1.Echo.Echo", "total": 10**6, "duration": "300ms",
                   "concurrency": 2})
    assert 0 < report["count"] < 10**6 and report["total"] < 2e9


def test_render_has_ghz_sections_and_cli_json(tmp_path, capsys) -> None:
    text = loadtest.render(_run({"call": "movierec.echo.v1.Echo.Echo", "total": 20}))
    for heading in ("Summary:", "Requests/sec:", "Latency distribution:", "99 % in",
                    "Status code distribution:", "[OK]   20 responses"):
        assert heading in text
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"call": "movierec.echo.v1.Echo.Echo", "host": "8.8.8.8:1"}))
    with pytest.raises(SystemExit, match="loopback"):
        loadtest.main([str(config)])


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10.0), ("500ms", 0.5), ("1m", 60.0),
                                               (3, 3.0), (None, None)])
def test_parse_duration(text, seconds) -> None:
    assert loadtest.parse_duration(text) == seconds
