"""``movierec up``: ports checked first, nothing left behind on failure, dead processes
restarted with backoff (or everything stopped)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stack_fixture import Stack, _database

from movierec import registry
from movierec.errors import Unavailable
from movierec.stack.process import free_port, port_open
from movierec.stack.supervise import GaveUp, Supervisor, process_alive
from movierec.stack.up import check_ports


def test_a_taken_port_is_named_before_anything_starts() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        env = {s.port_env: str(free_port()) for s in registry.SERVICES}
        env |= {s.metrics_env: "-1" for s in registry.SERVICES}
        env[registry.RETRIEVER.metrics_env] = str(taken)
        with pytest.raises(Unavailable, match=f"RETRIEVER_METRICS_PORT={taken}"):
            check_ports(env)


class Sleeper:
    """A real child process that the test kills."""

    def __init__(self) -> None:
        self.proc = None
        self.starts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(["sleep", "60"])
        self.starts += 1

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_a_dead_process_is_reaped_and_restarted_with_backoff() -> None:
    sleeper = Sleeper()
    sleeper.start()
    said: list[str] = []
    supervisor = Supervisor(max_restarts=2, window=60, backoff=1.0, say=said.append)
    supervisor.watch("sleeper", lambda: process_alive(sleeper.proc), sleeper.start)
    try:
        assert supervisor.check(now=0.0) == []
        sleeper.kill()
        assert supervisor.check(now=1.0) == ["sleeper"] and sleeper.starts == 2
        sleeper.kill()
        assert supervisor.check(now=1.5) == []          # backoff: not before 2.0
        assert supervisor.check(now=3.5) == ["sleeper"] and sleeper.starts == 3
        sleeper.kill()
        with pytest.raises(GaveUp, match="sleeper died 3 times"):
            supervisor.check(now=9.0)
        assert said == ["  sleeper died; restarting it"] * 2
    finally:
        sleeper.proc.kill()


def _children_of(marker: str) -> list[int]:
    """Processes whose environment carries ``marker`` (what `up` started)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _up_env(stack: Stack, database_url: str, milvus_uri: str, redis_url: str,
            home: Path) -> dict[str, str]:
    """`up` over the session's stores and models, on free ports, its runtime in ``home``."""
    env = {**os.environ, "MOVIEREC_HOME": str(home), "DATABASE_URL": _database(database_url),
           "MILVUS_URI": milvus_uri, "REDIS_URL": redis_url,
           "MOVIEREC_ARTIFACTS": stack.env["MOVIEREC_ARTIFACTS"]}
    for service in registry.SERVICES:
        env[service.port_env] = str(free_port())
        env[service.addr_env] = f"127.0.0.1:{env[service.port_env]}"
        env[service.metrics_env] = "-1"
    return env


def test_a_failed_start_stops_every_process_it_started(stack: Stack, database_url: str,
                                                       milvus_uri: str, redis_url: str,
                                                       tmp_path: Path) -> None:
    home = tmp_path / "up-home"
    env = _up_env(stack, database_url, milvus_uri, redis_url, home)
    env["EMBEDDER_HISTORY_LIMIT"] = "0"   # the third service refuses this value
    out = subprocess.run([sys.executable, "-m", "movierec.cli", "up", "--once", "--dataset",
                          "synthetic-150x200x25-s5", "--timeout", "60"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "catalog" in out.stdout and "retriever" in out.stdout   # two were up
    assert "embedder exited" in out.stderr
    for service in (registry.CATALOG, registry.RETRIEVER):
        assert not port_open("127.0.0.1", int(env[service.port_env])), service.name
    assert _children_of(str(home)) == []


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["start", "stores:", "services:", "serving;"])
def test_a_burst_of_signals_at_any_step_stops_everything(stack: Stack, database_url: str,
                                                         milvus_uri: str, redis_url: str,
                                                         tmp_path: Path, moment: str) -> None:
    """SIGTERM, SIGINT, SIGTERM within milliseconds, as `up` starts (before its handler
    exists: SIGTERM's default ends it), prepares, starts the services or serves: it stops
    once, completely (issue 31)."""
    home = tmp_path / "up-home"
    env = _up_env(stack, database_url, milvus_uri, redis_url, home)
    up = subprocess.Popen([sys.executable, "-m", "movierec.cli", "up", "--dataset",
                           "synthetic-150x200x25-s5", "--timeout", "60"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        while moment != "start" and not any(moment in line for line in seen[-1:]):
            seen.append(up.stdout.readline())
            assert seen[-1], "".join(seen)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            up.send_signal(sig)
            time.sleep(0.002)
        rest, _ = up.communicate(timeout=120)
    finally:
        up.kill()
    if moment == "start" and up.returncode == -signal.SIGTERM:
        assert not rest
    else:  # a signal of the burst that lands after the stop, as Python exits, ends it
        assert rest.rstrip().endswith("stopped"), "".join(seen) + rest
        assert up.returncode in (0, -signal.SIGINT, -signal.SIGTERM)
    assert _children_of(str(home)) == []
    for service in registry.SERVICES:
        assert not port_open("127.0.0.1", int(env[service.port_env])), service.name
