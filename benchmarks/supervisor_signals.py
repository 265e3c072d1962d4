"""Signal bursts against the Milvus supervisor: nothing may survive them (issue 31).

Each run starts the supervisor (:mod:`movierec.stack.milvus_netns`, in its private
namespaces, with ``spawn_supervisor`` as :class:`LocalMilvusServer` does) over a binary,
waits a random moment of its life (before its handlers exist, while Milvus starts,
while it serves), sends a burst of 1-3 signals (SIGTERM and SIGINT mixed, 0-20 ms
apart), and checks that the supervisor and every process of its server are gone
within the grace period plus a margin. ``make test`` runs 100 bursts against a stand-in
binary that traps SIGTERM (tests/test_local_milvus.py); this command runs them against
the real Milvus server::

    .venv/bin/python benchmarks/supervisor_signals.py --runs 100 --max-delay 20
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from movierec.stack import local_milvus_server as lms

#: What the stand-in binary does on SIGTERM: exit after a short pause, or ignore it (so
#: the supervisor's SIGKILL after the grace period is exercised too).
FAKE_MILVUS = """#!/bin/sh
if [ -f "$0.stubborn" ]; then trap '' TERM; else trap 'sleep 0.05; exit 0' TERM; fi
while :; do sleep 0.05; done
"""


@dataclass
class Outcome:
    """One burst: what was sent when, and what was left afterwards."""

    delay: float
    signals: list[str]
    seconds_to_gone: float
    survivors: list[int]


def processes_of(workdir: Path) -> list[int]:
    """Live (not zombie) processes of one server: the supervisor names ``workdir`` on its
    command line, Milvus runs in it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            named = str(workdir).encode() in (entry / "cmdline").read_bytes().split(b"\0")
            inside = os.readlink(entry / "cwd") == str(workdir)
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (named or inside) and state != "Z":
            found.append(int(entry.name))
    return found


def fake_binary(directory: Path, stubborn: bool = False) -> Path:
    """A stand-in for ``milvus`` that runs until SIGTERM (or ignores it when ``stubborn``)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "milvus"
    path.write_text(FAKE_MILVUS)
    path.chmod(0o755)
    marker = directory / "milvus.stubborn"
    if stubborn:
        marker.touch()
    else:
        marker.unlink(missing_ok=True)
    return path


def supervisor_command(binary: Path, workdir: Path, listen_fd: int, grace: float) -> list[str]:
    """The command line :class:`LocalMilvusServer` runs, over ``binary``."""
    server = lms.LocalMilvusServer(workdir)
    command = server._command(listen_fd, binary.parent)
    command[command.index("--binary") + 1] = str(binary)
    command[command.index("--grace") + 1] = str(grace)
    return command


def burst(rng: random.Random) -> list[signal.Signals]:
    return [rng.choice((signal.SIGTERM, signal.SIGINT)) for _ in range(rng.randint(1, 3))]


def wait_gone(proc: subprocess.Popen, workdir: Path, timeout: float) -> tuple[float, list[int]]:
    """Seconds until the supervisor exited and no process of its server is left."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None and not processes_of(workdir):
            return time.monotonic() - start, []
        time.sleep(0.02)
    alive = [proc.pid] if proc.poll() is None else []
    return time.monotonic() - start, sorted(set(alive + processes_of(workdir)))


def one_run(binary: Path, workdir: Path, rng: random.Random, max_delay: float,
            grace: float) -> Outcome:
    """Start the supervisor, signal it at a random moment, see what is left."""
    for sub in ("configs", "logs", "data", "run"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        proc = lms.spawn_supervisor(supervisor_command(binary, workdir, listener.fileno(),
                                                       grace), listener, workdir)
    delay = rng.uniform(0, max_delay)
    time.sleep(delay)
    sent = burst(rng)
    for sig in sent:
        if proc.poll() is None:
            proc.send_signal(sig)
        time.sleep(rng.uniform(0, 0.02))
    seconds, survivors = wait_gone(proc, workdir.resolve(), grace + 5)
    for pid in survivors:  # leave nothing behind, even when the run failed
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(5)
    return Outcome(delay, [s.name for s in sent], seconds, survivors)


def stress(binary: Path, workdir: Path, runs: int, max_delay: float, grace: float,
           seed: int = 0, say=lambda _: None) -> list[Outcome]:
    rng = random.Random(seed)
    outcomes = []
    for index in range(runs):
        outcome = one_run(binary, workdir, rng, max_delay, grace)
        say(f"{index:3d} after {outcome.delay:6.2f}s {'+'.join(outcome.signals):23s} "
            f"gone in {outcome.seconds_to_gone:5.2f}s survivors {outcome.survivors}")
        outcomes.append(outcome)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--max-delay", type=float, default=20.0,
                        help="signal at a uniform moment in [0, this] s after the start")
    parser.add_argument("--grace", type=float, default=lms.STOP_GRACE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fake", action="store_true", help="the stand-in binary, not Milvus")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="supervisor-signals-") as tmp:
        binary = fake_binary(Path(tmp) / "bin") if args.fake else lms.binary_dir() / "milvus"
        if not args.fake:
            server = lms.LocalMilvusServer(Path(tmp) / "milvus")
            server._prepare()
        outcomes = stress(binary, Path(tmp) / "milvus", args.runs, args.max_delay, args.grace,
                          args.seed, say=print)
    failed = [o for o in outcomes if o.survivors]
    times = sorted(o.seconds_to_gone for o in outcomes)
    print(f"{len(outcomes)} bursts, {len(failed)} left a process; time to gone: median "
          f"{times[len(times) // 2]:.2f}s, max {times[-1]:.2f}s (grace {args.grace}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
