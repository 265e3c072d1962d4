"""The local Milvus server: only one loopback port on the host, no orphans, `up`'s port check."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import supervisor_signals
from movierec.errors import Unavailable
from movierec.stack.local_milvus_server import LocalMilvusServer, isolation_error
from movierec.stack.stores import ports_to_check
from movierec.stack.up import check_ports

needs_namespaces = pytest.mark.skipif(isolation_error() is not None,
                                      reason=f"no private network namespace: {isolation_error()}")


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) listening on ``port`` here."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return [r.split()[1].split(":")[0] for r in rows
            if r.split()[3] == "0A" and int(r.split()[1].split(":")[1], 16) == port]


def _gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z":
            return True  # exited, waiting to be reaped by its (dead) parent's reaper
        time.sleep(0.1)
    return False


@needs_namespaces
def test_the_server_is_only_reachable_on_its_loopback_port(milvus_server_uri: str,
                                                           runtime_root: Path) -> None:
    if os.environ.get("MILVUS_URI"):
        pytest.skip("MILVUS_URI names an external server")
    port = int(milvus_server_uri.rsplit(":", 1)[1])
    supervisor = int((runtime_root / "milvus-server" / "milvus-server" / "pid").read_text())
    [milvus] = _children(supervisor)
    assert os.readlink(f"/proc/{milvus}/ns/net") != os.readlink("/proc/self/ns/net")
    assert os.readlink(f"/proc/{supervisor}/ns/net") != os.readlink("/proc/self/ns/net")
    assert _listening(port) == ["0100007F"]  # 127.0.0.1, the forwarder's socket only
    assert _listening(19530) in ([], ["0100007F"])  # Milvus' own ports are not here


@needs_namespaces
def test_a_failed_start_leaves_no_process(tmp_path: Path) -> None:
    server = LocalMilvusServer(tmp_path / "milvus")
    with pytest.raises(Unavailable, match="not healthy"):
        server.start(timeout=0.01)
    assert server.proc is None
    assert not server.running()


@needs_namespaces
def test_the_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    script = ("import sys, time; from pathlib import Path; "
              "from movierec.stack.local_milvus_server import LocalMilvusServer; "
              f"s = LocalMilvusServer(Path({str(tmp_path / 'milvus')!r})); s.start(); "
              "print(s.proc.pid, flush=True); time.sleep(600)")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    supervisor = int(owner.stdout.readline())
    [milvus] = _children(supervisor)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert _gone(supervisor) and _gone(milvus)


@needs_namespaces
@pytest.mark.slow
@pytest.mark.parametrize("stubborn, runs, grace", [(False, 100, 8.0), (True, 10, 0.5)])
def test_signal_bursts_at_random_moments_leave_nothing(tmp_path: Path, stubborn: bool,
                                                       runs: int, grace: float) -> None:
    """Issue 31: 1-3 SIGTERM/SIGINT at any moment of the supervisor's life (before its
    handlers exist, while Milvus starts, while it runs, inside a handler) stop it and its
    Milvus (a stand-in that traps SIGTERM, or ignores it: then SIGKILL after the grace)."""
    binary = supervisor_signals.fake_binary(tmp_path / "bin", stubborn=stubborn)
    outcomes = supervisor_signals.stress(binary, tmp_path / "milvus", runs, max_delay=0.6,
                                         grace=grace, seed=31 + stubborn)
    assert [o for o in outcomes if o.survivors] == []
    assert max(o.seconds_to_gone for o in outcomes) < grace + 2
    assert {len(o.signals) for o in outcomes} == {1, 2, 3}


def test_up_checks_the_local_milvus_port_and_names_its_variable(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environ = {"MILVUS_PORT": str(port)}
        assert ports_to_check(environ, tmp_path) == {"MILVUS_PORT": port}
        assert ports_to_check({**environ, "MILVUS_URI": "http://milvus:19530"}, tmp_path) == {}
        with pytest.raises(Unavailable, match=f"MILVUS_PORT={port}"):
            check_ports(environ)
