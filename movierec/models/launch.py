"""Run a training module on N processes under its framework's own launcher.

PyTorch trains data-parallel under ``torchrun`` (gloo on CPU), PaddlePaddle under
``paddle.distributed.launch`` (gloo on CPU builds). This module only builds their
command lines and supervises the launcher; the frameworks start, rendezvous and
watch the ranks themselves. The launcher runs in its own process group so a stop
signal, a failed rank or an exception here leaves no rank behind, and each rank's
log is kept in ``log_dir`` and printed (its tail) when the job fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from movierec.signals import Shutdown

#: lines of each failed rank's log printed on failure
TAIL_LINES = 40


@dataclass(frozen=True)
class Nodes:
    """Where the ranks run: this machine alone, or node ``rank`` of ``count`` (static)."""

    count: int = 1
    rank: int = 0
    master: str = "127.0.0.1"
    port: int = 29500

    @property
    def standalone(self) -> bool:
        return self.count == 1


def torchrun_command(module: str, nproc: int, args: Sequence[str], log_dir: Path,
                     nodes: Nodes = Nodes()) -> list[str]:
    """``torchrun`` running ``python -m module args`` on ``nproc`` ranks per node."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           f"--log-dir={log_dir}", "--redirects=3", "--tee=3"]
    if nodes.standalone:
        cmd.append("--standalone")
    else:
        cmd += [f"--nnodes={nodes.count}", f"--node-rank={nodes.rank}",
                "--rdzv-backend=static", f"--master-addr={nodes.master}",
                f"--master-port={nodes.port}"]
    return [*cmd, "-m", module, *args]


def paddle_command(module: str, nproc: int, args: Sequence[str], log_dir: Path,
                   ips: Sequence[str] = ()) -> list[str]:
    """``paddle.distributed.launch`` running ``python -m module args`` on ``nproc`` ranks."""
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc),
           "--log_dir", str(log_dir)]
    if ips:
        cmd += ["--ips", ",".join(ips)]
    # Paddle's launcher has no ``-m``: an unknown flag throws it into its legacy mode,
    # which runs the module name as a file. A script not ending in .py is run as a
    # command with the rest as its arguments; -u so a killed rank's log is complete.
    return [*cmd, sys.executable, "-u", "-m", module, *args]


def rank_logs(log_dir: Path) -> list[Path]:
    """Every rank's log file under ``log_dir`` (torchrun's and Paddle's layouts)."""
    found = [*log_dir.glob("**/attempt_*/*/stderr.log"), *log_dir.glob("**/attempt_*/*/stdout.log"),
             *log_dir.glob("workerlog.*")]
    return sorted(p for p in found if p.is_file())


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path``."""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def report_failure(log_dir: Path, out=None) -> None:
    """Print the tail of every non-empty rank log, named by its path (to ``out``, default
    the current ``sys.stderr``)."""
    out = out or sys.stderr
    for path in rank_logs(log_dir):
        if path.stat().st_size:
            print(f"----- {path} (last {TAIL_LINES} lines) -----\n{tail(path)}", file=out)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the launcher's process group, then SIGKILL whatever is left of it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None and not _group_alive(proc.pid):
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(proc.pid):
                return
            time.sleep(0.05)


def run(cmd: Sequence[str], log_dir: Path, env: dict[str, str] | None = None,
        grace: float = 10.0) -> int:
    """Run the launcher ``cmd`` to its end; its exit code (128+signal when stopped).

    On a non-zero exit every rank's log tail is printed; in every case the launcher's
    whole process group is gone when this returns.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    shutdown = Shutdown(interrupt=True)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    shutdown.install()
    proc = subprocess.Popen(list(cmd), env={**os.environ, **(env or {})},
                            start_new_session=True)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = 128 + shutdown.signum
    finally:
        shutdown.stopping()
        _stop_group(proc, grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code != 0:
        print(f"training launcher exited with {code}; rank logs in {log_dir}", file=sys.stderr)
        report_failure(log_dir)
    return code
