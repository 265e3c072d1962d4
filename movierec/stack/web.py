"""Start the facade as its own process and wait until it answers (tests, ``movierec up``).

    proc, url = start_web(env, log_dir)   # env carries GATEWAY_ADDR, CATALOG_ADDR, ...

Runs ``python -m movierec.apps.web`` on ``WEB_PORT`` from ``env`` (a free port when unset), appends
its JSON logs to ``log_dir/web.log`` and returns once ``GET /api/health`` is 200, that
is once the gateway behind it is SERVING.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from movierec.errors import Unavailable
from movierec.signals import deferred
from movierec.stack.process import free_port, stop_process


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=1) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_web(env: dict[str, str], log_dir: Path,
              timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """The running facade process and its base URL; Unavailable if it never gets healthy."""
    port = int(env.get("WEB_PORT") or free_port())
    log_dir.mkdir(parents=True, exist_ok=True)
    with deferred(), (log_dir / "web.log").open("ab") as out:   # see movierec.signals
        proc = subprocess.Popen([sys.executable, "-m", "movierec.apps.web"],
                                env={**env, "WEB_PORT": str(port)},
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, url, timeout, log_dir)
    except BaseException:       # a stop signal or a failure: the caller never gets proc
        stop_process(proc)
        raise
    return proc, url


def _wait_healthy(proc: subprocess.Popen, url: str, timeout: float, log_dir: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"web exited with code {proc.returncode} (see {log_dir}/web.log)")
        if healthy(url):
            return
        time.sleep(0.2)
    raise Unavailable(f"web was not healthy at {url} after {timeout:.0f}s")
