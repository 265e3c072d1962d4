"""A real PostgreSQL server for local runs and tests, on a free loopback port.

PostgreSQL refuses to run as root, so when this process is root the server runs as an
unprivileged user (``postgres`` if it exists, else a ``movierec`` system user is
created) through ``runuser``. Authentication is ``trust`` and the server listens on
127.0.0.1 only (no Unix socket). Binaries come from PATH or ``/usr/lib/postgresql/*/bin``
(Debian's ``postgresql`` package: ``make system-deps`` installs it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from movierec.errors import Unavailable
from movierec.stack.process import find_binary, free_port, port_open, wait_for_port

log = logging.getLogger(__name__)
PG_DIRS = ["/usr/lib/postgresql/*/bin"]
USER = "movierec"


def _binary(name: str) -> str:
    path = find_binary(name, PG_DIRS)
    if path is None:
        raise Unavailable(f"PostgreSQL's {name} not found; run `make system-deps` "
                          "(Debian package postgresql) or set DATABASE_URL")
    return path


def _service_user() -> str | None:
    """The user to run the server as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "movierec"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "movierec"], check=True)
    return "movierec"


def _as_user(user: str | None, args: list[str]) -> list[str]:
    return args if user is None else ["runuser", "-u", user, "--", *args]


def _usable_dir(user: str | None, wanted: Path) -> Path:
    """``wanted`` if ``user`` can reach it, else a private directory under /var/tmp."""
    wanted.mkdir(parents=True, exist_ok=True)
    if user is None:
        return wanted
    probe = subprocess.run(_as_user(user, ["test", "-x", str(wanted.parent)]), check=False)
    if probe.returncode == 0:
        return wanted
    tag = hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
    fallback = Path("/var/tmp") / f"movierec-{tag}" / wanted.name
    fallback.mkdir(parents=True, exist_ok=True)
    log.info("postgres data moved where %s can reach it", user, extra={"dir": str(fallback)})
    return fallback


class LocalPostgres:
    """Owns one PostgreSQL data directory and the server running on it."""

    def __init__(self, root: Path, *, durable: bool = True, database: str = "movierec") -> None:
        self.user = _service_user()
        self.root = _usable_dir(self.user, root)
        self.data = self.root / "data"
        self.durable = durable
        self.database = database
        self.port_file = self.root / "port"

    @property
    def port(self) -> int:
        return int(self.port_file.read_text()) if self.port_file.exists() else 0

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{self.database}"

    def _chown(self) -> None:
        if self.user is not None:
            shutil.chown(self.root, self.user, self.user)
            self.root.chmod(0o700)

    def _initdb(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self._chown()
        subprocess.run(_as_user(self.user, [_binary("initdb"), "-D", str(self.data), "-U", USER,
                                            "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]),
                       check=True, stdout=subprocess.DEVNULL)

    def running(self) -> bool:
        return self.port > 0 and (self.data / "postmaster.pid").exists() and \
            port_open("127.0.0.1", self.port)

    def start(self, timeout: float = 60.0) -> str:
        """Start (initialising on first use) and return the database URL."""
        if self.running():
            return self.url
        self._initdb()
        previous = self.port
        port = previous if previous and not port_open("127.0.0.1", previous) else free_port()
        options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                   "-c max_connections=200 -c shared_buffers=256MB")
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(_as_user(self.user, [_binary("pg_ctl"), "-D", str(self.data), "-l",
                                            str(self.data / "server.log"), "-o", options,
                                            "-w", "-t", str(int(timeout)), "start"]),
                       check=True, stdout=subprocess.DEVNULL)
        self.port_file.write_text(str(port))
        wait_for_port("127.0.0.1", port, timeout, what="postgres")
        self._create_database()
        return self.url

    def _create_database(self) -> None:
        done = subprocess.run([_binary("createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", USER, self.database], check=False, capture_output=True,
                              text=True)
        if done.returncode != 0 and "already exists" not in done.stderr:
            raise Unavailable(f"createdb failed: {done.stderr.strip()}")

    def destroy(self) -> None:
        """Stop the server and delete its data (throwaway instances: tests, benchmarks)."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        if self.root.parent.name.startswith("movierec-") and \
                self.root.parent.parent == Path("/var/tmp"):
            shutil.rmtree(self.root.parent, ignore_errors=True)

    def stop(self, mode: str = "fast") -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        subprocess.run(_as_user(self.user, [_binary("pg_ctl"), "-D", str(self.data), "-m", mode,
                                            "-w", "stop"]), check=False, stdout=subprocess.DEVNULL)
