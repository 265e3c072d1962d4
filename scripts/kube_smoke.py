"""`make kube-smoke`: deploy/k8s run for real on this machine with `podman kube play`.

1. Fresh PostgreSQL, Redis and Milvus on loopback (the local runtime's LocalStores).
2. `kubectl kustomize deploy/k8s/overlays/local`, adapted for kube play (kube_play.py).
3. The jobs as pods, in order, in the trainer image: train (a synthetic data set),
   load-catalog, load-vectors. With --artifacts DIR, DIR's models (and their data set,
   e.g. ml-1m from MOVIELENS_DIR) are copied into the volumes instead of training.
4. The five Deployments, until every gRPC health service says SERVING and the web
   facade's /api/health answers 200.
5. Recommend through the gateway for a profile, a liked list and a user id (and once
   through the web facade), checked against the data set and the trained artifacts.
6. A burst of requests while each container's memory and CPU are measured.
7. One retrain cycle: the retrain CronJob's pod, run once (`movierec retrain` on a
   snapshot of the catalog, promoted whatever it scores), while a loop keeps calling
   Recommend through the gateway; then the promoted versions are LATEST (the previous
   ones PREVIOUS) and live in Milvus, the gateway answers with them (the embedders
   reload every EMBEDDER_RELOAD_SECONDS, 5 s in the local overlay), every answer of the
   loop was OK, and the answers pass step 5's checks again.
8. Teardown: every pod, container, volume and secret named movierec-smoke-*, and the
   stores; the run fails if any is left.

Needs the images (`make images`) and the registry's ports free on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kube_play
import smoke_checks
import yaml
from containers import ROOT, image_exists, images, podman
from usage import Container, Sampler

from movierec import registry
from movierec.data.source import locate
from movierec.models import registry as models
from movierec.models.artifact import latest, read_metadata
from movierec.services.retriever.milvus import MilvusVectors
from movierec.stack.process import port_open
from movierec.stack.stores import LocalStores

OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "local"
PREFIX = "movierec-smoke-"
JOBS = ("train", "load-catalog", "load-vectors")
JOB_TIMEOUT = 900
RUN_AS = 10001  # the pods' runAsUser and fsGroup
READY_TIMEOUT = 300
SWITCH_TIMEOUT = 120  # promoted -> served: the embedders' reload period, and some


def kubectl() -> str:
    found = Path(sys.executable).parent / "kubectl"
    return str(found) if found.exists() else (shutil.which("kubectl") or "kubectl")


def render() -> list[dict]:
    out = subprocess.run([kubectl(), "kustomize", str(OVERLAY)], check=True,
                         capture_output=True, text=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def preflight() -> None:
    missing = [i.ref for i in images() if not image_exists(i.ref)]
    if missing:
        raise SystemExit(f"kube-smoke: build the images first (make images): {missing}")
    ports = [p for s in registry.SERVICES for p in (s.port, s.metrics_port) if p > 0]
    busy = [p for p in ports if port_open("127.0.0.1", p)]
    if busy:
        raise SystemExit(f"kube-smoke: ports {busy} are in use on 127.0.0.1 (stop "
                         "`movierec up` or whatever holds them)")


def leftovers() -> dict[str, list[str]]:
    """Everything of ours podman still holds: pods, containers, volumes, secrets."""
    queries = {"pods": ["pod", "ps", "-q", "--filter", f"name=^{PREFIX}"],
               "containers": ["ps", "-aq", "--filter", f"name=^{PREFIX}"],
               "volumes": ["volume", "ls", "-q", "--filter", f"name=^{PREFIX}"],
               "secrets": ["secret", "ls", "--format", "{{.Name}}"]}
    found = {k: podman(*q, capture=True).stdout.split() for k, q in queries.items()}
    found["secrets"] = [s for s in found["secrets"] if s.startswith(PREFIX)]
    return {k: v for k, v in found.items() if v}


def teardown(played: list[Path]) -> None:
    for path in reversed(played):
        podman("kube", "down", str(path), check=False, capture=True)
    left = leftovers()
    if left.get("pods"):
        podman("pod", "rm", "-f", *left["pods"], check=False, capture=True)
    if left.get("containers"):
        podman("rm", "-f", *left["containers"], check=False, capture=True)
    left = leftovers()
    if left.get("volumes"):
        podman("volume", "rm", "-f", *left["volumes"], check=False, capture=True)
    if left.get("secrets"):
        podman("secret", "rm", *left["secrets"], check=False, capture=True)


def play(path: Path, docs: list[dict], played: list[Path]) -> None:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    played.append(path)
    out = podman("kube", "play", str(path), capture=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"kube-smoke: podman kube play {path.name}: {out.stderr.strip()}")


def container(name: str) -> Container | None:
    out = podman("inspect", "--format", "{{.State.Pid}}", name, capture=True, check=False)
    pid = int(out.stdout.strip() or 0)
    return Container(name, pid) if pid > 0 else None


def run_job(name: str, plan: kube_play.Plan, work: Path, played: list[Path]) -> dict:
    """Play one Job's Pod (or one run of a CronJob), wait for its exit (0, else fail)
    and take it down."""
    pod = plan.jobs[name] if name in plan.jobs else plan.cron_jobs[name]
    start = time.monotonic()
    play(work / f"job-{name}.yaml", [*plan.config_maps, pod], played)
    [main] = kube_play.container_names(pod)
    measured = container(main)
    sampler = Sampler([measured] if measured else [])
    with sampler:
        code = podman("wait", main, capture=True, timeout=JOB_TIMEOUT).stdout.strip()
    cpu = measured.cpu_seconds() if measured else 0.0
    if code != "0":
        logs = podman("logs", "--tail", "40", main, capture=True, check=False)
        raise SystemExit(f"kube-smoke: job {name} exited {code}:\n{logs.stdout}{logs.stderr}")
    podman("kube", "down", str(played.pop()), capture=True)
    seconds = time.monotonic() - start
    print(f"kube-smoke: job {name} done in {seconds:.0f} s", flush=True)
    return {"wall_s": round(seconds, 1), "cpu_s": round(cpu, 1),
            "peak_rss_mib": round((measured.peak_rss if measured else 0) / 2**20)}


def create_secrets(plan: kube_play.Plan, stores: dict[str, str]) -> None:
    """The Secrets with the local stores' real addresses, as podman secrets."""
    for name, values in plan.secrets.items():
        filled = {k: stores.get(k, v) for k, v in values.items()}
        podman("secret", "create", name, "-", stdin=kube_play.secret_payload(filled),
               capture=True)


def confined(name: str) -> None:
    """The container runs as the manifests say: non-root, read-only root filesystem."""
    out = podman("inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}",
                 name, capture=True).stdout.split()
    if out != ["10001:10001", "true"]:
        raise SystemExit(f"kube-smoke: {name} runs as {out}, not 10001 read-only")


def deploy(plan: kube_play.Plan, work: Path, played: list[Path]) -> dict[str, Container]:
    play(work / "services.yaml", [*plan.config_maps, *plan.deployments.values()], played)
    try:
        smoke_checks.wait_ready(READY_TIMEOUT)
    except SystemExit:
        for workload in plan.deployments.values():
            for name in kube_play.container_names(workload):
                logs = podman("logs", "--tail", "5", name, capture=True, check=False)
                print(f"--- {name}\n{logs.stdout}{logs.stderr}", file=sys.stderr)
        raise
    running = {}
    for app, workload in plan.deployments.items():
        [name] = kube_play.container_names(workload)
        found = container(name)
        if found is None:
            raise SystemExit(f"kube-smoke: container {name} is not running")
        confined(name)
        running[app] = found
    return running


def volume(name: str) -> Path:
    return Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", f"{PREFIX}{name}",
                       capture=True).stdout.strip())


def bring_models(plan: kube_play.Plan, artifacts: Path) -> tuple[str, ...]:
    """Copy trained models into the artifacts volume instead of training: the jobs
    left to run. Their data set (MovieLens from MOVIELENS_DIR) goes to its volume."""
    dataset = ""
    for model in models.NAMES:
        version = latest(model, artifacts)
        dataset = read_metadata(version)["dataset"]
        shutil.copytree(version, volume("artifacts") / model / version.name)
        (volume("artifacts") / model / "LATEST").write_text(version.name)
    if not dataset.startswith("synthetic"):
        source = locate(dataset)
        if source is None:
            raise SystemExit(f"kube-smoke: {dataset} not found: set MOVIELENS_DIR")
        shutil.copytree(source, volume("movielens") / dataset)
    for name in ("artifacts", "movielens"):  # what fsGroup does in a cluster
        for path in [volume(name), *volume(name).rglob("*")]:
            shutil.chown(path, RUN_AS, RUN_AS)
    args = plan.jobs["load-catalog"]["spec"]["containers"][0]["args"]
    args[args.index("--dataset") + 1] = dataset
    return JOBS[1:]


def live_versions(milvus_uri: str) -> dict[str, str]:
    """The version of each model's live collection (what the retriever searches)."""
    store = MilvusVectors(milvus_uri, timeout=30)
    try:
        return {model: store.resolve(model).version for model in models.NAMES}
    finally:
        store.close()


def retrain_cycle(plan: kube_play.Plan, work: Path, played: list[Path],
                  dataset, milvus_uri: str) -> dict:
    """The retrain CronJob's pod, run once under traffic; the promotion checked."""
    artifacts = volume("artifacts")
    before = smoke_checks.artifact_versions(artifacts)
    served = smoke_checks.served_versions(dataset)
    if served != {m: f"{m}@{v}" for m, v in before.items()}:
        raise SystemExit(f"kube-smoke: before the retrain the gateway answers {served}, "
                         f"LATEST is {before}")
    with smoke_checks.Traffic(dataset) as traffic:
        job = run_job("retrain", plan, work, played)
        after = smoke_checks.artifact_versions(artifacts)
        changed = {m for m in models.NAMES if after[m] != before[m]}
        if changed != set(models.NAMES):
            raise SystemExit(f"kube-smoke: retrain promoted nothing new: {before} -> {after}")
        previous = smoke_checks.artifact_versions(artifacts, "PREVIOUS")
        if previous != before:
            raise SystemExit(f"kube-smoke: PREVIOUS is {previous}, not {before}")
        live = live_versions(milvus_uri)
        if live != after:
            raise SystemExit(f"kube-smoke: Milvus' live collections are {live}, not {after}")
        switch = smoke_checks.wait_for_versions(dataset, after, SWITCH_TIMEOUT)
        time.sleep(5)  # answers by the new versions, under the loop too
    calls = traffic.summary()
    print(f"kube-smoke: retrain promoted {before} -> {after}; served {switch:.1f} s "
          f"after the job; {calls['calls']} Recommend calls meanwhile, "
          f"{calls['failures']} failed", flush=True)
    if traffic.failures:
        raise SystemExit(f"kube-smoke: {len(traffic.failures)} of {calls['calls']} calls "
                         f"failed during the retrain, e.g. {traffic.failures[:5]}")
    seen = set(traffic.first_seen)
    wanted = {f"{m}@{v}" for versions in (before, after) for m, v in versions.items()}
    if not wanted <= seen:
        raise SystemExit(f"kube-smoke: the loop saw {sorted(seen)}, not every one of "
                         f"{sorted(wanted)}")
    return {"before": before, "after": after, "switch_s": round(switch, 1),
            "job": job, "traffic": calls}


def smoke(work: Path, played: list[Path], report: dict, models: Path | None,
          retrain: bool = True) -> None:
    plan = kube_play.plan(render())
    stores = LocalStores(root=work / "stores", durable=False, environ={})
    try:
        addresses = stores.start()
        create_secrets(plan, addresses)
        play(work / "volumes.yaml", plan.claims, played)
        jobs = bring_models(plan, models) if models else JOBS
        report["jobs"] = {name: run_job(name, plan, work, played) for name in jobs}
        running = deploy(plan, work, played)
        dataset = smoke_checks.dataset_of(plan.jobs["load-catalog"])
        report["dataset"] = dataset.name
        report["answers"] = smoke_checks.check_answers(dataset, volume("artifacts"))
        report["services"] = smoke_checks.measure(running, dataset)
        if retrain:
            report["retrain"] = retrain_cycle(plan, work, played, dataset,
                                              addresses["MILVUS_URI"])
            report["jobs"]["retrain"] = report["retrain"].pop("job")
            report["answers_after_retrain"] = smoke_checks.check_answers(
                dataset, volume("artifacts"))
    finally:
        teardown(played)
        stores.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="also write the measurements here (JSON)")
    parser.add_argument("--artifacts", type=Path, help="serve these trained models (an "
                        "artifacts root, e.g. ml-1m ones) instead of running the train job")
    parser.add_argument("--no-retrain", action="store_true", help="skip the retrain cycle "
                        "(with ml-1m --artifacts it trains on ml-1m, one thread: long)")
    args = parser.parse_args(argv)
    preflight()
    teardown([])  # what an interrupted earlier run left
    start = time.monotonic()
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix=PREFIX) as tmp:
        smoke(Path(tmp), [], report, args.artifacts, not args.no_retrain)
    left = leftovers()
    if left:
        raise SystemExit(f"kube-smoke: left behind: {left}")
    report["total_s"] = round(time.monotonic() - start)
    smoke_checks.print_report(report)
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"kube-smoke: passed in {report['total_s']} s; nothing left behind")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
