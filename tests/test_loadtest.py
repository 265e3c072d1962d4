"""The ghz-compatible load driver: config parsing, bounded runs, ghz's report layout."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
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


# --- open loop (``rps``) ------------------------------------------------------------

def _run_slow(config: dict) -> loadtest.Result:
    """``config`` against the Recording server (2 ms per call, at least)."""
    async def main():
        spec = ServiceSpec(SERVICE, Recording(), echo_pb2_grpc.add_EchoServicer_to_server)
        server, port = await build_server("slow", [spec], 0, settings.ServerSettings())
        try:
            return await loadtest.run({"call": "movierec.echo.v1.Echo.Echo",
                                       **config, "host": f"127.0.0.1:{port}"})
        finally:
            await server.stop(0)
    return asyncio.run(main())


def test_open_loop_issues_the_requested_requests_and_reports_its_target() -> None:
    report = _run({"call": "movierec.echo.v1.Echo.Echo", "total": 60, "rps": 400,
                   "data": [{"payload": "YQ=="}]})
    assert report["count"] == 60 and report["statusCodeDistribution"] == {"OK": 60}
    assert report["rpsTarget"] == 400 and report["latenessP99"] >= 0
    assert "Target rps:" in loadtest.render(report) and "Lateness p99:" in loadtest.render(report)
    closed = _run({"call": "movierec.echo.v1.Echo.Echo", "total": 5})
    assert "rpsTarget" not in closed and "latenessP99" not in closed  # ghz's keys only


def test_open_loop_duration_cuts_the_schedule() -> None:
    # Whichever ends first: 10**6 requests or what is scheduled before 150 ms.
    expected = len(loadtest.schedule(200, 10**6, "poisson", 3, duration=0.15))
    report = _run({"call": "movierec.echo.v1.Echo.Echo", "total": 10**6, "rps": 200,
                   "seed": 3, "duration": "150ms"})
    assert report["count"] == expected and 0 < expected < 10**6


def test_open_loop_counts_latency_from_the_schedule_not_the_send() -> None:
    # 30 requests due 0.2 ms apart, one in flight at a time, each taking >= 2 ms: call
    # k + 1 cannot answer before 2 ms after call k, but was due only 0.2 ms later, so
    # every latency exceeds the previous one by >= 1.8 ms whatever the machine's speed
    # (a closed loop would report about 2 ms for each).
    n, gap, service = 30, 0.0002, 0.002
    result = _run_slow({"total": n, "rps": 1 / gap, "arrival": "constant",
                        "concurrency": 1})
    report = loadtest.summary(result)
    assert report["count"] == n and report["statusCodeDistribution"] == {"OK": n}
    latencies = np.asarray(result.latencies)  # completion order = schedule order (cap 1)
    assert (np.diff(latencies) > 0).all()
    assert latencies[0] >= service and latencies[-1] >= n * service - (n - 1) * gap
    assert report["slowest"] / 1e6 > report["latenessP99"]  # the wait was the cap's


def test_open_loop_without_a_cap_does_not_queue_behind_slow_calls() -> None:
    # The same schedule with no cap: all 30 go out on time and overlap on the server,
    # so the last answers long before the capped run's bound of 30 x 2 ms - 29 x 0.2 ms.
    n, gap, service = 30, 0.0002, 0.002
    capped = _run_slow({"total": n, "rps": 1 / gap, "arrival": "constant",
                        "concurrency": 1})
    free = _run_slow({"total": n, "rps": 1 / gap, "arrival": "constant"})
    assert free.count == capped.count == n
    assert min(free.latencies) >= service and max(free.latencies) < max(capped.latencies)


def test_poisson_schedule_has_the_rate_as_its_mean_gap() -> None:
    rps, n = 250.0, 20_001
    offsets = loadtest.schedule(rps, n, "poisson", seed=11)
    gaps = np.diff(offsets)
    assert len(offsets) == n and offsets[0] == 0 and (gaps > 0).all()
    # Exponential gaps: standard deviation = mean = 1/rps, so the sample mean is within
    # 5 standard errors (1/rps / sqrt(n)) and the sample variance within 5 of its own
    # (var(s^2) = 8 sigma^4 / n for an exponential) of 1/rps^2.
    mean = 1 / rps
    assert abs(gaps.mean() - mean) < 5 * mean / np.sqrt(len(gaps))
    assert abs(gaps.var() / mean**2 - 1) < 5 * np.sqrt(8 / len(gaps))
    assert np.array_equal(offsets, loadtest.schedule(rps, n, "poisson", seed=11))
    assert not np.array_equal(offsets, loadtest.schedule(rps, n, "poisson", seed=12))
    assert np.array_equal(loadtest.schedule(rps, 50), loadtest.schedule(rps, 50, seed=0))


def test_constant_schedule_has_equal_gaps_and_duration_bounds_it() -> None:
    offsets = loadtest.schedule(40, 101, "constant")
    assert offsets[0] == 0 and np.allclose(np.diff(offsets), 1 / 40)
    assert len(loadtest.schedule(8, 1000, "constant", duration=1.0)) == 8  # 0 .. 0.875 s
    assert len(loadtest.schedule(8, 5, "constant", duration=1.0)) == 5     # total first
    with pytest.raises(ValueError, match="arrival"):
        loadtest.schedule(8, 5, "bursty")
    with pytest.raises(ValueError, match="rps"):
        loadtest.schedule(0, 5)


def test_cli_rps_flag_overrides_the_config(tmp_path, monkeypatch) -> None:
    seen = {}

    async def fake_run(config):
        seen.update(config)
        return loadtest.Result(rps_target=config["rps"], elapsed=1.0)
    monkeypatch.setattr(loadtest, "run", fake_run)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"call": "movierec.echo.v1.Echo.Echo", "rps": 5}))
    assert loadtest.main([str(config), "--rps", "12.5", "--json"]) == 0
    assert seen["rps"] == 12.5 and seen["host"] == "127.0.0.1:50050"


GHZ = Path(__file__).resolve().parent.parent / "loadtest" / "ghz"
OPEN_CONFIGS = sorted((GHZ / "open_loop").glob("*.json"))


@pytest.mark.parametrize("path", OPEN_CONFIGS, ids=[p.stem for p in OPEN_CONFIGS])
def test_open_loop_ghz_configs_are_distinct_misses_at_a_rate(path) -> None:
    from google.protobuf import json_format

    from movierec.gateway.v1 import gateway_pb2

    config = json.loads(path.read_text())
    assert config["name"] == path.stem and config["call"].endswith("Gateway.Recommend")
    assert config["rps"] > 0 and "duration" not in config  # ghz: duration ignores total
    assert config["total"] == len(config["data"]) >= config["concurrency"] >= 1
    keys = {json.dumps(r, sort_keys=True) for r in config["data"]}
    assert len(keys) == len(config["data"])  # each sent once: cache misses
    for request in config["data"]:
        json_format.ParseDict(request, gateway_pb2.RecommendRequest())


def test_open_loop_ghz_configs_are_what_the_generator_writes() -> None:
    ml1m = Path(os.environ.get("MOVIELENS_DIR") or GHZ.parent.parent.parent / "shared" /
                "data" / "ml-1m")
    if not (ml1m / "ratings.dat").is_file():
        pytest.skip("ml-1m not present")
    spec = importlib.util.spec_from_file_location("ghz_generate", GHZ / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    from movierec.data.source import load_dataset

    configs = generate.build_open_loop(load_dataset("ml-1m", ml1m))
    assert sorted(configs) == [p.stem for p in OPEN_CONFIGS] and len(configs) == 3
    for stem, config in configs.items():
        assert (GHZ / "open_loop" / f"{stem}.json").read_text() == generate.render(config)
