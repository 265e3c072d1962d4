"""Shared pieces of the benchmark scripts: stack processes, load runs, reporting.

Benchmarks print the command that produced them and their numbers; nothing here is
used by tests, and timings never gate anything.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from movierec import loadtest, registry
from movierec.stack.process import free_port, stop_process
from movierec.stack.up import launch, wait_serving

ROOT = Path(__file__).resolve().parent.parent


def header(title: str) -> None:
    """Print what ran, where and when."""
    command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    print(f"# {title}")
    print(f"# command: .venv/bin/python {command}")
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} cores, {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}")


def percentiles(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "mean_ms": float(values.mean())}


def timed(function, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        out.append(time.perf_counter() - start)
    return out


def load(call: str, host: str, data, total: int, concurrency: int) -> dict:
    """One closed-loop run with the ghz-compatible driver; a flat summary."""
    config = {"call": call, "host": host, "data": data, "total": total,
              "concurrency": concurrency, "timeout": "5s"}
    report = loadtest.summary(asyncio.run(loadtest.run(config)))
    pct = {d["percentage"]: d["latency"] / 1e6 for d in report["latencyDistribution"]}
    return {"concurrency": concurrency, "count": report["count"], "rps": report["rps"],
            "p50_ms": pct[50], "p99_ms": pct[99],
            "ok": report["statusCodeDistribution"].get("OK", 0)}


class Processes:
    """Service processes started for a benchmark, stopped on exit."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_dir = log_dir
        self.procs = []

    def start(self, name: str) -> str:
        service = registry.get(name)
        port = int(self.env.setdefault(service.port_env, str(free_port())))
        self.env[service.addr_env] = f"127.0.0.1:{port}"
        self.env.setdefault(service.metrics_env, str(free_port()))
        proc = launch(service, self.env, self.log_dir)
        self.procs.append(proc)
        wait_serving(proc, name, port, 120)
        return f"127.0.0.1:{port}"

    def echo(self) -> str:
        import subprocess

        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "movierec.cli", "serve", "echo",
                                 "--port", str(port)], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        from movierec.stack.up import wait_serving as wait

        wait(proc, "echo", port, 60)
        return f"127.0.0.1:{port}"

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)
        self.procs.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
