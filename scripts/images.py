"""Build every movierec image with podman (`make images`), one at a time.

    python scripts/images.py [--base IMAGE] [--only NAME ...] [--sizes]

Without --base the images build on the official python:3.11-slim-bookworm when it can
be pulled, else on a local Debian base that scripts/base-image.sh makes with
debootstrap. pip inside the build gets the host's CA bundle (PIP_CERT or pip's
``cert`` setting) and, for the trainer, a local folder holding torch's CPU wheel
(MOVIEREC_WHEELS, PIP_FIND_LINKS or pip's ``find-links``) or else the PyTorch CPU
index. The same file builds with docker (deploy/Containerfile, docs/deploy.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from containers import (
    CONTAINERFILE,
    LOCAL_BASE,
    OFFICIAL_BASE,
    ROOT,
    TAG,
    TORCH_CPU_INDEX,
    Image,
    image_exists,
    image_size,
    images,
    podman,
)

CA_IN_BUILD = "/run/movierec-build/ca.crt"
WHEELS_IN_BUILD = "/run/movierec-build/wheels"


def pip_setting(env: str, key: str) -> str:
    """A pip setting of this machine, from its environment or pip's configuration."""
    if os.environ.get(env):
        return os.environ[env]
    out = subprocess.run([sys.executable, "-m", "pip", "config", "get", key],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def wheel_folder() -> Path | None:
    """A local folder with torch's 2.13.0 CPU wheel, if this machine keeps one."""
    candidates = [os.environ.get("MOVIEREC_WHEELS", ""),
                  *pip_setting("PIP_FIND_LINKS", "global.find-links").split()]
    for candidate in filter(None, candidates):
        folder = Path(candidate.removeprefix("file://"))
        if folder.is_dir() and any(folder.glob("torch-2.13.0*cpu*.whl")):
            return folder
    return None


def choose_base() -> str:
    """The official image if it is here or can be pulled, else the debootstrap one."""
    for ref in (OFFICIAL_BASE, LOCAL_BASE):
        if image_exists(ref):
            return ref
    if podman("pull", "-q", OFFICIAL_BASE, check=False, capture=True).returncode == 0:
        return OFFICIAL_BASE
    print(f"images: no registry reachable; making {LOCAL_BASE} with debootstrap")
    subprocess.run([str(ROOT / "scripts" / "base-image.sh"), LOCAL_BASE], check=True)
    return LOCAL_BASE


def build_command(image: Image, base: str) -> list[str]:
    args = {"BASE": base, **image.args}
    volumes: list[str] = []
    cert = pip_setting("PIP_CERT", "global.cert")
    if cert and Path(cert).is_file():
        volumes.append(f"{cert}:{CA_IN_BUILD}:ro")
        args["PIP_CERT"] = CA_IN_BUILD
    if image.target == "trainer":
        wheels = wheel_folder()
        if wheels is not None:
            volumes.append(f"{wheels}:{WHEELS_IN_BUILD}:ro")
            args["PIP_FIND_LINKS"] = WHEELS_IN_BUILD
        else:
            args["PIP_EXTRA_INDEX_URL"] = TORCH_CPU_INDEX
    command = ["build", "--network", "host", "-f", str(CONTAINERFILE), "--target",
               image.target, "-t", image.ref, "--label",
               f"org.opencontainers.image.version={TAG}"]
    for volume in volumes:
        command += ["--volume", volume]
    for key, value in args.items():
        command += ["--build-arg", f"{key}={value}"]
    return [*command, str(ROOT)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="base image (default: see above)")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="build only these (gateway, ..., trainer)")
    parser.add_argument("--sizes", action="store_true", help="only print the sizes")
    args = parser.parse_args(argv)
    chosen = [i for i in images()
              if not args.only or i.name.rsplit("/", 1)[-1] in args.only]
    if not args.sizes:
        base = args.base or choose_base()
        for image in chosen:
            start = time.monotonic()
            print(f"images: building {image.ref} on {base}", flush=True)
            podman(*build_command(image, base))
            print(f"images: {image.ref} built in {time.monotonic() - start:.0f} s", flush=True)
    print("| image | size (MB) |\n|---|---:|")
    for image in chosen:
        if image_exists(image.ref):
            print(f"| `{image.ref}` | {image_size(image.ref) / 1e6:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
