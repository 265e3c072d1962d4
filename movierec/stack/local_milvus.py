"""Local Milvus processes on a loopback port: the shared bookkeeping, and milvus-lite.

milvus-lite ships a ``milvus`` binary that serves one database file. Run in-process
(``MilvusClient("file.db")``) only that one process may open the file; run as a
server on ``127.0.0.1:PORT`` the loader CLI and the retriever service can share it
through ``MILVUS_URI=http://127.0.0.1:PORT``, exactly as they share a Milvus standalone
server (:mod:`movierec.stack.local_milvus_server`, the default; ``MILVUS_MODE=lite``
picks this one). See docs/milvus-embedded.md for the measurements behind it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

from movierec.errors import Unavailable
from movierec.signals import deferred
from movierec.stack.process import free_port, port_open, stop_process, wait_for_port


class LoopbackServer:
    """A server process owning ``root``, reachable on ``127.0.0.1:port``.

    ``root/port`` keeps the port of the last run (restarts keep one address) and
    ``root/pid`` the pid while it runs, so another process (``movierec load vectors``
    beside ``movierec up``) finds and uses it instead of starting a second one.
    """

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port_file, self.pid_file = root / "port", root / "pid"
        self.port = port or self._previous_port() or free_port()
        self.proc: subprocess.Popen | None = None

    def _previous_port(self) -> int | None:
        if not self.port_file.exists():
            return None
        port = int(self.port_file.read_text())
        return port if not port_open("127.0.0.1", port) or self.running_at(port) else None

    def running_at(self, port: int) -> bool:
        """Whether our server (perhaps started by another process) listens on ``port``."""
        try:
            os.kill(int(self.pid_file.read_text()), 0)
        except (OSError, ValueError):
            return False
        return port_open("127.0.0.1", port)

    def running(self) -> bool:
        return self.running_at(self.port)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _started(self) -> str:
        self.port_file.write_text(str(self.port))
        self.pid_file.write_text(str(self.proc.pid))
        return self.uri

    def _stopped(self) -> None:
        self.proc = None
        self.pid_file.unlink(missing_ok=True)

    def destroy(self) -> None:
        """Stop the server and delete its data (throwaway instances: tests, benchmarks)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def stop(self) -> None:
        raise NotImplementedError


def _lite_bin_dir() -> Path:
    try:
        with warnings.catch_warnings():  # milvus-lite 2.5 imports the deprecated pkg_resources
            warnings.simplefilter("ignore")
            import milvus_lite
    except ImportError as exc:
        raise Unavailable("milvus-lite is not installed (pip install 'movierec[local-milvus]') "
                          "and MILVUS_URI is not set") from exc
    return Path(milvus_lite.__file__).resolve().parent / "lib"


class LocalMilvus(LoopbackServer):
    """One milvus-lite server process serving ``root/milvus.db``."""

    def start(self, timeout: float = 60.0) -> str:
        if self.running():
            return self.uri
        lib = _lite_bin_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        env["LD_LIBRARY_PATH"] = f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}"
        with deferred(), (self.root / "milvus.log").open("ab") as log:   # movierec.signals
            self.proc = subprocess.Popen(
                [str(lib / "milvus"), str(self.root / "milvus.db"), f"127.0.0.1:{self.port}",
                 os.environ.get("MILVUS_LITE_LOG_LEVEL", "ERROR")],
                cwd=self.root, env=env, stdout=log, stderr=log, start_new_session=True)
        try:
            wait_for_port("127.0.0.1", self.port, timeout, self.proc, "milvus-lite")
        except BaseException:
            self.stop()
            raise
        return self._started()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self._stopped()
