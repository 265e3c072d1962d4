"""Small fixes (issue "Architecture II"): the port preflight, a failed preparation step,
client message sizes, ServerSettings parsed once, the shared deadline, metadata and
rating rules, and the echo server in the registry."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from movierec import registry
from movierec.errors import Unavailable
from movierec.stack.process import free_port
from movierec.stack.up import _port_taken, check_ports

# --- 1. the port preflight binds like the servers (SO_REUSEADDR) --------------------


def _time_wait_ports() -> set[int]:
    """Local ports of IPv4 TCP sockets in TIME_WAIT (state 06 of /proc/net/tcp)."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "06":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _leave_in_time_wait() -> int:
    """A loopback port whose only socket is a server-side connection in TIME_WAIT, left
    by a listener that set SO_REUSEADDR as the servers do (gRPC, uvicorn, the stores)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        caller = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()                    # the server side closes first ...
        assert caller.recv(1) == b""        # ... the caller sees its FIN ...
        caller.close()                      # ... and closes: the server side is TIME_WAIT
    deadline = time.monotonic() + 10
    while port not in _time_wait_ports() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert port in _time_wait_ports()
    return port


def _all_free_but(variable: str, port: int) -> dict[str, str]:
    env = {s.port_env: str(free_port()) for s in registry.SERVICES}
    env |= {s.metrics_env: "-1" for s in registry.SERVICES}
    env["MILVUS_URI"] = "http://127.0.0.1:1"      # no local Milvus port to check
    env[variable] = str(port)
    return env


def test_a_port_in_time_wait_is_free_for_the_preflight() -> None:
    port = _leave_in_time_wait()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))     # what the old preflight did: refused
    assert not _port_taken(port)
    check_ports(_all_free_but(registry.GATEWAY.port_env, port))   # does not raise


def test_a_listening_port_is_still_taken() -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert _port_taken(port)
        with pytest.raises(Unavailable, match=f"GATEWAY_PORT={port}"):
            check_ports(_all_free_but(registry.GATEWAY.port_env, port))
