"""``movierec loadtest CONFIG``: run a ghz config file from Python and report like ghz.

Reads the same JSON config ghz takes (``call``, ``host``, ``total``, ``concurrency``,
``duration``, ``data`` — an object, or an array used round-robin —, ``metadata``,
``timeout``, ``connections``), resolves the method from movierec's generated
descriptors (what ghz gets from reflection or the protoset), and drives the server
with grpc.aio. Like ghz, the ``data`` array is handed out round-robin across ALL
workers (call n sends ``data[n % len(data)]`` whichever worker makes it), so a miss
scenario of distinct requests never has the same request in flight twice; requests/s
counts every call and the latency figures use successful calls only. Bounded by
``total`` and ``duration``; loopback targets only.

Closed loop (no ``rps``): ``concurrency`` workers, each sending its next request when
the previous one answered; a call's latency runs from its send to its answer.

Open loop (``"rps": R``, ghz's key, or ``--rps``): request n is due at a scheduled time
fixed before the run, whatever the answers do: gaps drawn from an exponential
distribution of mean 1/R (``"arrival": "poisson"``, the default, seeded by ``"seed"``,
default 0) or all equal to 1/R (``"constant"``), until ``total`` requests or
``duration``, whichever ends first. ``concurrency`` then only caps the calls in flight
(0 or absent: no cap); a request held back by the cap waits its turn in order. **A
call's latency runs from its scheduled time** to its answer, so time spent queued in
the client (behind the cap, or behind a late driver) counts: no coordinated omission.
The report adds ``rpsTarget`` and ``latenessP99``: how late (ms) the driver itself
started requests after their scheduled time, the sign of a saturated driver. (ghz's
own ``--rps`` paces at constant gaps and times each call from when a worker sends it.)

    movierec loadtest loadtest/ghz/recommend_profile.json [--host 127.0.0.1:50050]
        [--total N] [--concurrency C] [--duration 10s] [--rps R] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import ipaddress
import json
import pkgutil
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import uvloop
from google.protobuf import descriptor_pool, json_format, message_factory

import movierec

PERCENTILES = (10, 25, 50, 75, 90, 95, 99)
MAX_TOTAL = 1_000_000
MAX_SECONDS = 600.0


@dataclass
class Result:
    """Outcome of one run: latencies of OK calls (s) and every call's status."""

    latencies: list[float] = field(default_factory=list)
    codes: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    elapsed: float = 0.0
    rps_target: float | None = None  # open loop only
    lateness: list[float] = field(default_factory=list)  # open loop: issue - schedule (s)

    @property
    def count(self) -> int:
        return sum(self.codes.values())


def parse_duration(text: str | int | float | None) -> float | None:
    """ghz durations: ``10s``, ``500ms``, ``1m``, or seconds as a number."""
    if text in (None, "", 0, "0"):
        return None
    if isinstance(text, int | float):
        return float(text)
    for suffix, factor in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * factor
    raise ValueError(f"bad duration {text!r}")


def _load_descriptors() -> None:
    root = Path(movierec.__file__).parent
    for info in pkgutil.walk_packages([str(root)], "movierec."):
        if info.name.endswith("_pb2"):
            importlib.import_module(info.name)


def resolve_method(call: str):
    """(path, request class, response class) for ``pkg.Service.Method`` or ``.../Method``."""
    _load_descriptors()
    service_name, _, method_name = call.replace("/", ".").rpartition(".")
    service = descriptor_pool.Default().FindServiceByName(service_name)
    method = service.methods_by_name[method_name]
    request = message_factory.GetMessageClass(method.input_type)
    response = message_factory.GetMessageClass(method.output_type)
    return f"/{service.full_name}/{method.name}", request, response


def check_loopback(host: str) -> None:
    name = host.rsplit(":", 1)[0].strip("[]")
    address = ipaddress.ip_address(socket.gethostbyname(name) if name != "::1" else name)
    if not address.is_loopback:
        raise SystemExit(f"movierec loadtest drives loopback servers only, not {host}")


async def _worker(stub, next_request, metadata, timeout, result) -> None:
    while (request := next_request()) is not None:
        start = time.perf_counter()
        try:
            await stub(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            result.codes[exc.code().name] += 1
            result.errors[f"rpc error: code = {exc.code().name} desc = {exc.details()}"] += 1
            continue
        result.latencies.append(time.perf_counter() - start)
        result.codes["OK"] += 1


def schedule(rps: float, total: int, arrival: str = "poisson", seed: int = 0,
             duration: float | None = None) -> np.ndarray:
    """Offsets (s from the start) at which an open-loop run sends its requests: the first
    at 0, then gaps of 1/``rps`` (``constant``) or exponential gaps of mean 1/``rps``
    from ``numpy.random.default_rng(seed)`` (``poisson``); at most ``total`` of them, and
    only those before ``duration`` when one is given."""
    if rps <= 0:
        raise ValueError(f"rps must be positive, got {rps}")
    if arrival == "constant":
        gaps = np.full(max(total - 1, 0), 1.0 / rps)
    elif arrival == "poisson":
        gaps = np.random.default_rng(seed).exponential(1.0 / rps, max(total - 1, 0))
    else:
        raise ValueError(f"arrival must be 'poisson' or 'constant', got {arrival!r}")
    offsets = np.concatenate([[0.0], np.cumsum(gaps)])[:max(total, 0)]
    return offsets if duration is None else offsets[offsets < duration]


class _Cap:
    """At most ``limit`` holders; waiters are served first come, first served."""

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.waiters: deque[asyncio.Future] = deque()

    async def acquire(self) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        await waiter  # the releasing holder hands its slot over

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


async def _open_loop(stubs, requests, offsets: np.ndarray, metadata, timeout,
                     cap: int, result: Result) -> None:
    """Send request n at ``start + offsets[n]`` (or as soon as the cap allows); latency
    from that scheduled time."""
    limit = _Cap(cap) if cap > 0 else None
    pending: set[asyncio.Task] = set()

    async def call(n: int, due: float) -> None:
        if limit is not None:
            await limit.acquire()
        try:
            await stubs[n % len(stubs)](requests[n % len(requests)], timeout=timeout,
                                        metadata=metadata)
            done = time.perf_counter()
        except grpc.aio.AioRpcError as exc:
            result.codes[exc.code().name] += 1
            result.errors[f"rpc error: code = {exc.code().name} desc = {exc.details()}"] += 1
            return
        finally:
            if limit is not None:
                limit.release()
        result.latencies.append(done - due)
        result.codes["OK"] += 1

    start = time.perf_counter()
    for n, offset in enumerate(offsets.tolist()):
        due = start + offset
        while (wait := due - time.perf_counter()) > 0:  # timers may wake early (uvloop: ms)
            await asyncio.sleep(wait)
        result.lateness.append(max(0.0, time.perf_counter() - due))
        task = asyncio.get_running_loop().create_task(call(n, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    while pending:
        await asyncio.gather(*list(pending))


async def run(config: dict) -> Result:
    path, request_cls, response_cls = resolve_method(config["call"])
    data = config.get("data") or {}
    requests = [json_format.ParseDict(d, request_cls()) for d in
                (data if isinstance(data, list) else [data])]
    total = min(int(config.get("total") or 200), MAX_TOTAL)
    duration = min(parse_duration(config.get("duration")) or MAX_SECONDS, MAX_SECONDS)
    timeout = parse_duration(config.get("timeout")) or 20.0
    metadata = tuple((config.get("metadata") or {}).items())
    channels = [grpc.aio.insecure_channel(config["host"])
                for _ in range(max(1, int(config.get("connections") or 1)))]
    stubs = [c.unary_unary(path, request_serializer=request_cls.SerializeToString,
                           response_deserializer=response_cls.FromString) for c in channels]
    if config.get("rps"):
        rps = float(config["rps"])
        offsets = schedule(rps, total, config.get("arrival") or "poisson",
                           int(config.get("seed") or 0), duration)
        result = Result(rps_target=rps)
        start = time.perf_counter()
        await _open_loop(stubs, requests, offsets, metadata, timeout,
                         max(0, int(config.get("concurrency") or 0)), result)
        result.elapsed = time.perf_counter() - start
        await asyncio.gather(*(c.close() for c in channels))
        return result
    concurrency = max(1, int(config.get("concurrency") or 50))
    result, issued = Result(), [0]
    deadline = time.perf_counter() + duration

    def next_request():
        """The next request of the one shared round-robin; None when the run is over."""
        n = issued[0]
        if n >= total or time.perf_counter() >= deadline:
            return None
        issued[0] += 1
        return requests[n % len(requests)]
    start = time.perf_counter()
    await asyncio.gather(*(_worker(stubs[i % len(stubs)], next_request, metadata, timeout,
                                   result) for i in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    await asyncio.gather(*(c.close() for c in channels))
    return result


def summary(result: Result) -> dict:
    """ghz's JSON report fields (durations in nanoseconds, as ghz writes them)."""
    lat = np.asarray(result.latencies) * 1e9
    pct = np.percentile(lat, PERCENTILES) if len(lat) else [0] * len(PERCENTILES)
    report = {
        "count": result.count, "total": int(result.elapsed * 1e9),
        "average": int(lat.mean()) if len(lat) else 0,
        "fastest": int(lat.min()) if len(lat) else 0,
        "slowest": int(lat.max()) if len(lat) else 0,
        "rps": result.count / result.elapsed if result.elapsed else 0.0,
        "latencyDistribution": [{"percentage": p, "latency": int(v)}
                                for p, v in zip(PERCENTILES, pct, strict=True)],
        "statusCodeDistribution": dict(result.codes),
        "errorDistribution": dict(result.errors),
    }
    if result.rps_target is not None:  # open loop: what was asked, and the driver's delay
        report["rpsTarget"] = result.rps_target
        report["latenessP99"] = (float(np.percentile(result.lateness, 99)) * 1e3
                                 if result.lateness else 0.0)
    return report


def render(report: dict) -> str:
    """The text layout of ghz's summary."""
    ms = lambda ns: f"{ns / 1e6:.2f} ms"  # noqa: E731
    lines = ["", "Summary:", f"  Count:\t{report['count']}",
             f"  Total:\t{report['total'] / 1e6:.2f} ms", f"  Slowest:\t{ms(report['slowest'])}",
             f"  Fastest:\t{ms(report['fastest'])}", f"  Average:\t{ms(report['average'])}",
             f"  Requests/sec:\t{report['rps']:.2f}"]
    if "rpsTarget" in report:
        lines += [f"  Target rps:\t{report['rpsTarget']:.2f} (open loop, latency from the "
                  "scheduled time)", f"  Lateness p99:\t{report['latenessP99']:.2f} ms"]
    lines += ["", "Latency distribution:"]
    lines += [f"  {d['percentage']} % in {ms(d['latency'])} "
              for d in report["latencyDistribution"]]
    lines += ["", "Status code distribution:"]
    lines += [f"  [{code}]   {n} responses" for code, n in report["statusCodeDistribution"].items()]
    if report["errorDistribution"]:
        lines += ["", "Error distribution:"]
        lines += [f"  [{n}]   {text}" for text, n in report["errorDistribution"].items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="movierec loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="a ghz JSON config file")
    parser.add_argument("--host", help="override the config's host")
    parser.add_argument("--total", "-n", type=int)
    parser.add_argument("--concurrency", "-c", type=int)
    parser.add_argument("--duration", "-z")
    parser.add_argument("--rps", type=float, help="open loop: requests per second on a "
                        "fixed schedule (the config's arrival, default poisson); latency "
                        "from each request's scheduled time")
    parser.add_argument("--json", action="store_true", help="print ghz's JSON report")
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text())
    for key in ("host", "total", "concurrency", "duration", "rps"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    config.setdefault("host", "127.0.0.1:50050")
    check_loopback(config["host"])
    report = summary(uvloop.run(run(config)))
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else render(report))
    return 0 if report["statusCodeDistribution"].keys() <= {"OK"} else 1
