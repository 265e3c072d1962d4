"""Shared pieces of the benchmark scripts: stack processes, load runs, reporting.

Benchmarks print the command that produced them and their numbers; nothing here is
used by tests, and timings never gate anything.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import uvloop

from movierec import loadtest, registry
from movierec.stack.process import free_port, stop_process
from movierec.stack.up import launch, wait_serving

ROOT = Path(__file__).resolve().parent.parent


def command_line() -> str:
    """How this benchmark was started, to print beside its numbers."""
    args = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    return f".venv/bin/python {args}"


def header(title: str) -> None:
    """Print what ran, where and when."""
    print(f"# {title}")
    print(f"# command: {command_line()}")
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} cores, {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}")


def cpu_ticks() -> tuple[int, int]:
    """(stolen, all) CPU ticks of the whole machine so far, from /proc/stat: on a virtual
    machine, time the host gave to others; a row measured while it was high is slower."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    stolen, total = after[0] - before[0], after[1] - before[1]
    return round(100 * stolen / total, 1) if total > 0 else 0.0


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
    report = loadtest.summary(uvloop.run(loadtest.run(config)))
    pct = {d["percentage"]: d["latency"] / 1e6 for d in report["latencyDistribution"]}
    return {"concurrency": concurrency, "count": report["count"], "rps": report["rps"],
            "p50_ms": pct[50], "p99_ms": pct[99],
            "ok": report["statusCodeDistribution"].get("OK", 0)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and every live descendant (a Milvus
    server runs as the child of a supervisor), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) for child in children(pid))


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's list, /proc/PID/task/TID/children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return found


class Processes:
    """Service processes started for a benchmark, stopped on exit."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> str:
        service = registry.get(name)
        port = int(self.env.setdefault(service.port_env, str(free_port())))
        self.env[service.addr_env] = f"127.0.0.1:{port}"
        self.env.setdefault(service.metrics_env, str(free_port()))
        self.procs[name] = launch(service, self.env, self.log_dir)
        wait_serving(self.procs[name], name, port, 120)
        return f"127.0.0.1:{port}"

    def echo(self) -> str:
        port = free_port()
        self.procs["echo"] = subprocess.Popen(
            [sys.executable, "-m", "movierec.cli", "serve", "echo", "--port", str(port)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_serving(self.procs["echo"], "echo", port, 60)
        return f"127.0.0.1:{port}"

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds each process has used so far."""
        return {name: cpu_seconds(proc.pid) for name, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            stop_process(proc)
        self.procs.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
