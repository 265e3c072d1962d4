"""Process helpers for the local runtime: free ports, readiness waits, clean stops."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from movierec.data.source import home_dir
from movierec.errors import Unavailable


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None,
                  what: str = "server") -> None:
    """Block until ``host:port`` accepts connections; fail if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise Unavailable(f"{what} exited with code {proc.returncode} before listening")
        time.sleep(0.05)
    raise Unavailable(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL if it is still alive."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def find_binary(name: str, extra_dirs: list[str] | None = None) -> str | None:
    """``name`` on PATH or in one of ``extra_dirs`` (globs allowed), newest first."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in extra_dirs or []:
        for directory in sorted(Path("/").glob(pattern.lstrip("/")), reverse=True):
            candidate = directory / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def runtime_root() -> Path:
    return home_dir() / "runtime"
