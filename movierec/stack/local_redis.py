"""A real Redis server for local runs and tests, on a free loopback port.

The cache is disposable, so persistence is off. ``redis-server`` comes from PATH
(Debian's ``redis-server`` package: ``make system-deps`` installs it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from movierec.errors import Unavailable
from movierec.signals import deferred
from movierec.stack.process import find_binary, free_port, stop_process, wait_for_port


class LocalRedis:
    """One redis-server child process."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> str:
        binary = find_binary("redis-server")
        if binary is None:
            raise Unavailable("redis-server not found; run `make system-deps` or set REDIS_URL")
        self.root.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
                "--save", "", "--appendonly", "no", "--protected-mode", "yes",
                "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru",
                "--logfile", str(self.root / "redis.log")]
        with deferred():            # started and recorded in one step (movierec.signals)
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port("127.0.0.1", self.port, timeout, self.proc, "redis-server")
        return self.url

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
