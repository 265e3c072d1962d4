"""What `make images` and `make kube-smoke` share: the image list and how podman is run.

The images come from the one registry (movierec/registry.py): one per service, built
from deploy/Containerfile with the service's own extras, plus the trainer (training and
the load jobs). Every tag is the project version: the manifests pin it, never
``latest``. podman runs with the project's deploy/podman/containers.conf (runc, no
default ulimits) unless the caller set ``CONTAINERS_CONF``; nothing else is changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from movierec import __version__, registry

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
PODMAN_CONF = ROOT / "deploy" / "podman" / "containers.conf"
LOCAL_BASE = "localhost/movierec/python:3.11-bookworm"
OFFICIAL_BASE = "docker.io/library/python:3.11-slim-bookworm"
TAG = __version__
TRAINER_EXTRAS = "train,catalog,retriever"
# Where pip finds torch's CPU wheel when no local wheel folder is given.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Image:
    """One image: its name, the Containerfile stage and the build arguments."""

    name: str
    target: str
    args: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:{TAG}"

    @property
    def local_ref(self) -> str:
        """How podman names a locally built image."""
        return f"localhost/{self.ref}"


def service_image(service: registry.Service) -> Image:
    return Image(service.image, "service", {
        "SERVICE": service.name, "EXTRAS": service.name, "PORT": str(service.port),
        "METRICS_PORT": str(service.metrics_port)})


def images() -> list[Image]:
    """Every image, the services in the registry's order, then the trainer."""
    return [*(service_image(s) for s in registry.SERVICES),
            Image(registry.TRAINER_IMAGE, "trainer", {"EXTRAS": TRAINER_EXTRAS})]


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(PODMAN_CONF))
    return env


def podman(*args: str, check: bool = True, capture: bool = False,
           timeout: float | None = None, stdin: str | None = None
           ) -> subprocess.CompletedProcess:
    """Run ``podman ARGS`` with the project's configuration."""
    if shutil.which("podman") is None:
        raise SystemExit("podman is not installed: scripts/container-deps.sh")
    return subprocess.run(["podman", *args], check=check, env=podman_env(), text=True,
                          capture_output=capture, timeout=timeout, input=stdin)


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def image_size(ref: str) -> int:
    out = podman("image", "inspect", "--format", "{{.Size}}", ref, capture=True)
    return int(out.stdout.strip())
