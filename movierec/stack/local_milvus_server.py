"""A real Milvus 2.3.5 standalone server (the ``milvus`` PyPI package) for local runs and tests.

The wheel ships the ``milvus`` binary (with embedded etcd, rocksmq and local storage)
as lzma files; they are unpacked once into ``$MOVIEREC_HOME/cache/milvus-<version>``.
Each server keeps its configuration, data and logs under its own ``root``.

Ports. Milvus 2.3.5 listens on every interface for its nine gRPC/HTTP ports (proxy,
coordinators, nodes, metrics) whatever its ``ip`` settings say; only the embedded etcd
takes a listen address. So the server runs in a private network namespace (``unshare
--user --map-root-user --net``, see :mod:`movierec.stack.milvus_netns`) whose only
interface is its own loopback: every port below is passed explicitly and none of them
exists on the host, so they can collide with nothing (not even Milvus' 9091 metrics
port with Prometheus Pushgateway's). The host sees exactly one port, ``127.0.0.1:port``,
forwarded to the proxy. Where user namespaces are not allowed the server refuses to
start rather than expose its ports.
"""

from __future__ import annotations

import contextlib
import importlib.util
import lzma
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

from movierec.data.source import home_dir
from movierec.errors import Unavailable
from movierec.signals import deferred, held
from movierec.stack.local_milvus import LoopbackServer

VERSION = "2.3.5"
#: Ports inside the private namespace (Milvus' defaults), every one passed explicitly.
PORTS = {"etcd_port": 2379, "proxy_port": 19530, "proxy_internal_port": 19529,
         "root_coord_port": 53100, "query_coord_port": 19531, "query_node_port": 21123,
         "index_coord_port": 31000, "index_node_port": 21121, "data_coord_port": 13333,
         "data_node_port": 21124}
ETCD_PEER_PORT, METRICS_PORT = 2380, 9091
UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--mount", "--"]
STOP_GRACE = 8.0


def _package_dir() -> Path:
    spec = importlib.util.find_spec("milvus")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(f"the Milvus server is not installed (pip install milvus=={VERSION}, "
                          "part of movierec[local-milvus]); set MILVUS_MODE=lite or MILVUS_URI")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def binary_dir() -> Path:
    """The unpacked binary and libraries, shared by every server of this version."""
    target = home_dir() / "cache" / f"milvus-{VERSION}"
    if (target / "milvus").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".milvus-", dir=target.parent))
    for packed in (_package_dir() / "bin").glob("*.lzma"):
        with lzma.open(packed) as src, (staging / packed.stem).open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        (staging / packed.stem).chmod(0o755)
    try:
        staging.rename(target)
    except OSError:  # another process unpacked it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def render_config(root: Path) -> str:
    """The package's ``milvus.yaml`` template with our ports, paths and loopback addresses."""
    values: dict[str, object] = {
        **PORTS, "etcd_log_level": "warn", "etcd_log_path": str(root / "logs" / "etcd.log"),
        "etcd_data_dir": str(root / "data" / "etcd"), "local_storage_dir": str(root / "data"),
        "rocksmq_data_dir": str(root / "data" / "rocksmq"),
        "system_log_path": str(root / "logs"), "server_pem_path": "server.pem",
        "server_key_path": "server.key", "ca_pem_path": "ca.pem",
        "authorization_enabled": "false", "tls_mode": 0}
    text = (_package_dir() / "config.yaml.template").read_text()
    text = re.sub(r"\{\{\s*(\w+)[^}]*\}\}", lambda m: str(values[m.group(1)]), text)
    edits = [  # (old, new, expected count): fail loudly if the template ever changes
        ("  ip: # if not", "  ip: 127.0.0.1 # if not", 7),
        ("endpoints: localhost:", "endpoints: 127.0.0.1:", 1),
        ("  use:\n    embed: true", f"  config:\n    path: {root / 'configs' / 'etcd.yaml'}\n"
                                    "  use:\n    embed: true", 1),
        ("gracefulStopTimeout: 1800", f"gracefulStopTimeout: {int(STOP_GRACE) - 3}", 1),
        ("log:\n  level: info", "log:\n  level: warn", 1),
        ("  stdout: true # Stdout enable", "  stdout: false # Stdout enable", 1)]
    for old, new, count in edits:
        if text.count(old) != count:
            raise RuntimeError(f"milvus {VERSION} config template changed near {old!r}")
        text = text.replace(old, new)
    return text


def etcd_config() -> str:
    client, peer = f"http://127.0.0.1:{PORTS['etcd_port']}", f"http://127.0.0.1:{ETCD_PEER_PORT}"
    return (f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
            f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
            f"initial-cluster: default={peer}\n")


@cache
def isolation_error() -> str | None:
    """Why a private network namespace cannot be made here (None when it can)."""
    if shutil.which("unshare") is None:
        return "the unshare command (util-linux) is missing"
    done = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else (done.stderr.strip() or "unshare failed")


def _listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise Unavailable(f"port 127.0.0.1:{port} for the local Milvus is taken; set "
                          "MILVUS_PORT to a free port") from exc
    sock.listen(128)
    return sock


def wait_healthy(address: str, timeout: float, proc: subprocess.Popen) -> None:
    """Block until Milvus' CheckHealth says healthy; fail if ``proc`` exits or time runs out."""
    import grpc
    from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = milvus_pb2_grpc.MilvusServiceStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Unavailable(f"the Milvus server exited with code {proc.returncode} "
                                  "before it was healthy")
            try:
                if stub.CheckHealth(milvus_pb2.CheckHealthRequest(), timeout=2).isHealthy:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise Unavailable(f"the Milvus server was not healthy on {address} within {timeout:.0f}s")


class LocalMilvusServer(LoopbackServer):
    """One Milvus standalone server over ``root``, reachable on ``127.0.0.1:port`` only."""

    def _command(self, listen_fd: int, binaries: Path) -> list[str]:
        env = {"DEPLOY_MODE": "STANDALONE", "METRICS_PORT": METRICS_PORT,
               "MILVUSCONF": f"{self.root / 'configs'}/", "LD_LIBRARY_PATH": binaries}
        return [*UNSHARE, sys.executable, "-m", "movierec.stack.milvus_netns",
                "--listen-fd", str(listen_fd), "--proxy-port", str(PORTS["proxy_port"]),
                "--etcd-port", str(PORTS["etcd_port"]),
                "--binary", str(binaries / "milvus"), "--workdir", str(self.root),
                "--run-dir", str(self.root / "run"),
                "--parent", str(os.getpid()), "--grace", str(STOP_GRACE),
                *(f"--env={name}={value}" for name, value in env.items())]

    def _prepare(self) -> Path:
        problem = isolation_error()
        if problem is not None:
            raise Unavailable("cannot give the Milvus server a private network namespace "
                              f"({problem}); Milvus {VERSION} would listen on all interfaces, "
                              "so it is not started: set MILVUS_MODE=lite, or MILVUS_URI to a "
                              "Milvus you run")
        binaries = binary_dir()
        for sub in ("configs", "logs", "data", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "configs" / "milvus.yaml").write_text(render_config(self.root))
        (self.root / "configs" / "etcd.yaml").write_text(etcd_config())
        shutil.copy(_package_dir() / "glog.conf", self.root / "configs" / "glog.conf")
        return binaries

    def start(self, timeout: float = 120.0) -> str:
        """Start the server (unless ours already runs) and return its URI once healthy."""
        if self.running():
            return self.uri
        binaries = self._prepare()
        listener = _listener(self.port)
        try:
            with deferred():
                self.proc = spawn_supervisor(self._command(listener.fileno(), binaries),
                                             listener, self.root)
        finally:
            listener.close()
        try:
            wait_healthy(f"127.0.0.1:{self.port}", timeout, self.proc)
        except BaseException:
            self.stop()
            raise
        return self._started()

    def stop(self) -> None:
        """Stop the whole process group this object started: supervisor and Milvus."""
        if self.proc is None:
            return
        stop_group(self.proc, STOP_GRACE + 4)
        self._stopped()


def spawn_supervisor(command: list[str], listener: socket.socket,
                     root: Path) -> subprocess.Popen:
    """Start the supervisor ``command`` (in its own session, logging to ``root``/logs,
    given ``listener``) with its stop signals held until its handlers exist
    (:func:`movierec.signals.held`): a signal at any moment of its life stops it."""
    with held(), (root / "logs" / "supervisor.log").open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                pass_fds=(listener.fileno(),), start_new_session=True)


def stop_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM ``proc`` (the supervisor: it stops Milvus with one SIGTERM, since a second
    one makes Milvus exit before it deregisters), then SIGKILL whatever is left of its
    process group after ``timeout`` seconds."""
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)
