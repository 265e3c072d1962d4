"""``movierec up``'s first-start training: every missing model trained side by side.

Each model trains in its own ``movierec train`` process with one thread, so the models
(which used to train one after another, each on one core) share both cores, and the
catalog load runs beside them. Their output lines are printed as they come, each
prefixed with the model's name. The first failure stops the others and is reported on
one line (:class:`StepFailed`); leaving the ``with`` block any other way (a stop
signal's KeyboardInterrupt, an error in the catalog load) stops every training process.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import TracebackType

from movierec.errors import MovierecError
from movierec.signals import deferred
from movierec.stack.process import stop_process

#: seconds a training process gets to exit after SIGTERM before SIGKILL
GRACE_S = 10.0
#: seconds between two "still training" lines (the trainers print little on their own)
HEARTBEAT_S = 60.0
#: how a ``movierec`` command starts (the command's arguments follow)
MOVIEREC = [sys.executable, "-m", "movierec.cli"]


class StepFailed(MovierecError):
    """A preparation step's command failed; it has printed why (``up`` exits 1)."""


def failure(what: str, argv: list[str], code: int) -> str:
    """The one line that names a failed ``movierec ARGV`` command and its exit code."""
    return f"{what}: `movierec {' '.join(argv)}` exited with code {code}"


def _relay(name: str, stream) -> None:
    """Print each line of ``stream`` prefixed with ``[name]`` until it closes."""
    for line in iter(stream.readline, ""):
        print(f"    [{name}] {line.rstrip()}", flush=True)
    stream.close()


class Training:
    """Training processes started together, by model name (none: nothing to do)."""

    def __init__(self, commands: dict[str, list[str]]) -> None:
        self.commands = commands
        self.procs: dict[str, subprocess.Popen] = {}
        self.relays: list[threading.Thread] = []
        self.started = time.perf_counter()

    def __enter__(self) -> Training:
        try:
            for name, argv in self.commands.items():
                with deferred():    # started and recorded in one step (movierec.signals)
                    self.procs[name] = subprocess.Popen(
                        [*MOVIEREC, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True, bufsize=1)
                relay = threading.Thread(target=_relay, args=(name, self.procs[name].stdout),
                                         daemon=True)
                relay.start()
                self.relays.append(relay)
        except BaseException:       # __exit__ does not run when __enter__ raises
            self.stop()
            raise
        return self

    def wait(self) -> None:
        """Block until every process ended; StepFailed (the others stopped) at the first
        that exits non-zero."""
        pending = dict(self.procs)
        beat = time.monotonic() + HEARTBEAT_S
        while pending:
            if time.monotonic() >= beat:
                beat += HEARTBEAT_S
                print(f"    still training {', '.join(pending)} "
                      f"({time.perf_counter() - self.started:.0f}s)", flush=True)
            for name, proc in list(pending.items()):
                code = proc.poll()
                if code is None:
                    continue
                del pending[name]
                if code != 0:
                    self.stop()
                    raise StepFailed(failure(f"training {name} failed", self.commands[name],
                                             code))
                print(f"    {name} trained in {time.perf_counter() - self.started:.0f}s",
                      flush=True)
            time.sleep(0.2)
        for relay in self.relays:
            relay.join(5)

    def stop(self) -> None:
        """SIGTERM every process still running, SIGKILL after :data:`GRACE_S`."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + GRACE_S
        for proc in self.procs.values():
            stop_process(proc, max(deadline - time.monotonic(), 0.1))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
