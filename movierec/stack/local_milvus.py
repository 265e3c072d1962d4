"""Embedded Milvus (milvus-lite) run as its own server process on a loopback port.

milvus-lite ships a ``milvus`` binary that serves one database file. Run in-process
(``MilvusClient("file.db")``) only that one process may open the file; run as a
server on ``127.0.0.1:PORT`` the loader CLI and the retriever service can share it
through ``MILVUS_URI=http://127.0.0.1:PORT``, exactly as they would share a Milvus
standalone server. See docs/milvus-embedded.md for the measurements behind this.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

from movierec.errors import Unavailable
from movierec.stack.process import free_port, port_open, stop_process, wait_for_port


def _lite_bin_dir() -> Path:
    try:
        with warnings.catch_warnings():  # milvus-lite 2.5 imports the deprecated pkg_resources
            warnings.simplefilter("ignore")
            import milvus_lite
    except ImportError as exc:
        raise Unavailable("milvus-lite is not installed (pip install 'movierec[retriever]') "
                          "and MILVUS_URI is not set") from exc
    return Path(milvus_lite.__file__).resolve().parent / "lib"


class LocalMilvus:
    """One milvus-lite server process serving ``root/milvus.db``."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port_file = root / "port"
        self.port = port or self._previous_port() or free_port()
        self.proc: subprocess.Popen | None = None

    def _previous_port(self) -> int | None:
        """The port of an earlier run, so restarts keep one address."""
        if self.port_file.exists():
            port = int(self.port_file.read_text())
            return port if not port_open("127.0.0.1", port) or self.running_at(port) else None
        return None

    def running_at(self, port: int) -> bool:
        """Whether our database's server (started by another process) listens on ``port``."""
        pid_file = self.root / "pid"
        if not (pid_file.exists() and port_open("127.0.0.1", port)):
            return False
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (OSError, ValueError):
            return False
        return True

    def running(self) -> bool:
        return self.running_at(self.port)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> str:
        if self.running():
            return self.uri
        lib = _lite_bin_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        env["LD_LIBRARY_PATH"] = f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}"
        log = (self.root / "milvus.log").open("ab")
        self.proc = subprocess.Popen(
            [str(lib / "milvus"), str(self.root / "milvus.db"), f"127.0.0.1:{self.port}",
             os.environ.get("MILVUS_LITE_LOG_LEVEL", "ERROR")],
            cwd=self.root, env=env, stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_for_port("127.0.0.1", self.port, timeout, self.proc, "milvus-lite")
        self.port_file.write_text(str(self.port))
        (self.root / "pid").write_text(str(self.proc.pid))
        return self.uri

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
            (self.root / "pid").unlink(missing_ok=True)
