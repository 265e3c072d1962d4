"""Memory and CPU of running containers, read from /proc and their cgroups.

A container's processes are those of its cgroup (a job's ``sh -c`` and the
``movierec`` processes it starts count together). Memory is the sum of their resident
set sizes (VmRSS, what ``ps`` shows), sampled; CPU is the cgroup's accumulated CPU
time. cgroup v1 (cpuacct) and v2 (cpu.stat) are both read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_dirs(pid: int) -> tuple[Path, Path, bool]:
    """(directory listing the processes, directory with the CPU counter, is v2)."""
    controllers: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else [""]:
            controllers[name] = path.lstrip("/")
    if "memory" in controllers and (CGROUP_ROOT / "cpuacct").exists():
        return (CGROUP_ROOT / "memory" / controllers["memory"],
                CGROUP_ROOT / "cpuacct" / controllers.get("cpuacct", controllers["memory"]),
                False)
    unified = CGROUP_ROOT / controllers[""]
    return unified, unified, True


def _rss_bytes(pid: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass  # the process ended between listing and reading
    return 0


@dataclass
class Container:
    """One container's counters, from the pid of its first process."""

    name: str
    pid: int
    procs_dir: Path = field(init=False)
    cpu_dir: Path = field(init=False)
    v2: bool = field(init=False)
    peak_rss: int = 0
    cpu_seen: float = 0.0  # the last CPU time read (a finished job's cgroup is gone)

    def __post_init__(self) -> None:
        self.procs_dir, self.cpu_dir, self.v2 = _cgroup_dirs(self.pid)

    def rss(self) -> int:
        try:
            pids = (self.procs_dir / "cgroup.procs").read_text().split()
        except OSError:
            return 0
        total = sum(_rss_bytes(p) for p in pids)
        self.peak_rss = max(self.peak_rss, total)
        return total

    def cpu_seconds(self) -> float:
        try:
            if self.v2:
                stat = (self.cpu_dir / "cpu.stat").read_text().split()
                seconds = int(stat[stat.index("usage_usec") + 1]) / 1e6
            else:
                seconds = int((self.cpu_dir / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return self.cpu_seen
        self.cpu_seen = max(self.cpu_seen, seconds)
        return self.cpu_seen

    def sample(self) -> None:
        self.rss()
        self.cpu_seconds()


class Sampler:
    """Samples the memory of some containers every ``interval`` seconds until stopped."""

    def __init__(self, containers: list[Container], interval: float = 0.5) -> None:
        self.containers = containers
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for container in self.containers:
                container.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
