"""A local Prometheus scraping the stack of ``movierec up``, with the alerting rules loaded.

``make monitor`` (``python -m movierec.stack.monitor``) runs Debian's ``prometheus``
binary (``make system-deps`` installs it) in the foreground until Ctrl-C, on
http://127.0.0.1:9090 by default. Its config is written from the service registry: one
scrape job per service, named after it, on the port of ``<SERVICE>_METRICS_PORT`` (the
registry's default when unset; ``-1`` leaves the service out), with the rules of
``deploy/monitoring/movierec-rules.yaml`` (docs/operations.md). Data lives under the
runtime folder (``$MOVIEREC_HOME/runtime/prometheus``) and is kept for two days.

Tests start :class:`LocalPrometheus` themselves with short intervals
(tests/test_monitoring.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from movierec import registry
from movierec.errors import Unavailable
from movierec.signals import deferred
from movierec.stack.process import (
    find_binary,
    free_port,
    runtime_root,
    stop_process,
    wait_for_port,
)

#: The rules in the source tree (deploy/ is not installed with the package).
RULES = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "movierec-rules.yaml"


def scrape_targets(env: Mapping[str, str], host: str = "127.0.0.1") -> dict[str, str]:
    """Service name -> ``host:metrics port`` for each service whose metrics are on."""
    targets = {}
    for service in registry.SERVICES:
        raw = env.get(service.metrics_env, "").strip()
        port = int(raw) if raw else service.metrics_port
        if port > 0:
            targets[service.name] = f"{host}:{port}"
    return targets


def config(targets: Mapping[str, str], rules: Sequence[Path], scrape_interval: str = "15s",
           evaluation_interval: str = "15s") -> dict:
    """A Prometheus config (JSON is YAML) scraping ``targets``, job named after each."""
    return {
        "global": {"scrape_interval": scrape_interval,
                   "evaluation_interval": evaluation_interval,
                   "scrape_timeout": scrape_interval if _seconds(scrape_interval) < 10
                   else "10s"},
        "rule_files": [str(Path(r).resolve()) for r in rules],
        "scrape_configs": [{"job_name": name, "static_configs": [{"targets": [target]}]}
                           for name, target in targets.items()],
    }


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if duration.endswith(unit):
            return float(duration[:-len(unit)]) * units[unit]
    raise ValueError(f"unsupported duration {duration!r}")


class LocalPrometheus:
    """One prometheus child process on a loopback port."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, config_file: Path) -> list[str]:
        binary = find_binary("prometheus")
        if binary is None:
            raise Unavailable("prometheus not found; run `make system-deps` "
                              "(Debian's prometheus package)")
        return [binary, f"--config.file={config_file}",
                f"--storage.tsdb.path={self.root / 'data'}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address=127.0.0.1:{self.port}"]

    def write_config(self, settings: dict) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "prometheus.yml"
        path.write_text(json.dumps(settings, indent=2) + "\n")
        return path

    def start(self, settings: dict, timeout: float = 30.0) -> str:
        """Start in the background; return the URL once it is ready."""
        args = self.command(self.write_config(settings))
        log = (self.root / "prometheus.log").open("ab")
        with deferred():            # started and recorded in one step (movierec.signals)
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_for_port("127.0.0.1", self.port, timeout, self.proc, "prometheus")
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise Unavailable(f"prometheus not ready; see {self.root / 'prometheus.log'}")
            time.sleep(0.1)
        return self.url

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def api(self, path: str, **params: str) -> object:
        """The ``data`` of a GET on the HTTP API (``/api/v1/<path>``)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as reply:
            body = json.load(reply)
        if body.get("status") != "success":
            raise Unavailable(f"prometheus {path}: {body}")
        return body["data"]

    def alerts(self) -> list[dict]:
        """Active alerts (pending or firing), each with ``labels`` and ``state``."""
        return self.api("alerts")["alerts"]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m movierec.stack.monitor",
        description="Prometheus for the local stack (movierec up), with movierec's alerts")
    parser.add_argument("--port", type=int, default=9090, help="web UI and API port")
    parser.add_argument("--rules", type=Path, default=RULES, help="rule file to load")
    parser.add_argument("--scrape-interval", default="15s")
    parser.add_argument("--evaluation-interval", default="15s")
    args = parser.parse_args(argv)
    if not args.rules.is_file():
        print(f"monitor: no rule file {args.rules}", file=sys.stderr)
        return 2
    targets = scrape_targets(os.environ)
    prometheus = LocalPrometheus(runtime_root() / "prometheus", args.port)
    settings = config(targets, [args.rules], args.scrape_interval, args.evaluation_interval)
    try:
        command = prometheus.command(prometheus.write_config(settings))
    except Unavailable as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return 1
    for name, target in targets.items():
        print(f"  scraping {name:9s} {target}")
    print(f"monitor: Prometheus on {prometheus.url} (alerts: {prometheus.url}/alerts), "
          f"data in {prometheus.root}; Ctrl-C stops it")
    sys.stdout.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
