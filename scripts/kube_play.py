"""Rendered Kubernetes objects, made runnable by `podman kube play` (podman 4.3).

kube play runs Pods and Deployments with their ConfigMaps and PersistentVolumeClaims,
and nothing else: this module turns what it lacks into what it has, and keeps
everything else as rendered.

- Jobs become Pods (restartPolicy Never); the smoke test waits for their exit code.
- A CronJob becomes the Pod of one run of its job template (what ``kubectl create job
  --from=cronjob/NAME`` starts); the smoke test runs it when it chooses, not on a schedule.
- Secrets become podman secrets: kube play reads a secret as JSON ``{key: base64}``.
- Each pod's emptyDir volumes get the pod's name (kube play names them as written,
  so two pods' ``tmp`` would otherwise be one shared volume).
- Pods on the host's network list no ports (kube play would map them, which only its
  bridge networking can); probes name port numbers instead.
- Services, Ingress, NetworkPolicies, HPAs and PDBs are left out (nothing runs them).
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass, field

#: Kinds kube play cannot run; the local overlay adapts addresses instead.
LEFT_OUT = {"Service", "Ingress", "NetworkPolicy", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "Namespace"}


@dataclass
class Plan:
    """What the smoke test plays, by kind."""

    config_maps: list[dict] = field(default_factory=list)
    claims: list[dict] = field(default_factory=list)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    jobs: dict[str, dict] = field(default_factory=dict)          # app name -> Pod
    cron_jobs: dict[str, dict] = field(default_factory=dict)     # app name -> Pod (one run)
    deployments: dict[str, dict] = field(default_factory=dict)   # app name -> Deployment


def pod_template(workload: dict) -> dict:
    """The pod template of a Deployment or Job, or of a CronJob's job template."""
    spec = workload["spec"]
    return spec["jobTemplate"]["spec"]["template"] if "jobTemplate" in spec else spec["template"]


def app_name(workload: dict) -> str:
    return pod_template(workload)["metadata"]["labels"]["app.kubernetes.io/name"]


def secret_values(secret: dict) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return {**values, **secret.get("stringData", {})}


def secret_payload(values: dict[str, str]) -> str:
    """The podman secret's content that kube play expects: JSON of base64 values."""
    return json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in values.items()})


def private_empty_dirs(pod_name: str, spec: dict) -> dict:
    """A copy of ``spec`` whose emptyDir volumes are named ``<pod>-<volume>``."""
    spec = copy.deepcopy(spec)
    renamed = {}
    for volume in spec.get("volumes", []):
        if "emptyDir" in volume:
            renamed[volume["name"]] = f"{pod_name}-{volume['name']}"
            volume["name"] = renamed[volume["name"]]
    for container in spec.get("initContainers", []) + spec["containers"]:
        for mount in container.get("volumeMounts", []):
            mount["name"] = renamed.get(mount["name"], mount["name"])
    return spec


def without_port_list(spec: dict) -> dict:
    """A copy of a host-network ``spec`` without ``ports``, probes on port numbers.

    kube play maps every listed port, which only bridge networking can; on the host's
    network the processes bind their ports themselves.
    """
    spec = copy.deepcopy(spec)
    for container in spec["containers"]:
        numbers = {p["name"]: p["containerPort"] for p in container.pop("ports", [])
                   if "name" in p}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            action = container.get(probe, {}).get("httpGet") or container.get(
                probe, {}).get("tcpSocket")
            if action and action["port"] in numbers:
                action["port"] = numbers[action["port"]]
    return spec


def adapted(pod_name: str, spec: dict) -> dict:
    spec = private_empty_dirs(pod_name, spec)
    return without_port_list(spec) if spec.get("hostNetwork") else spec


def job_pod(job: dict) -> dict:
    """The Pod that one run of ``job`` (a Job, or a CronJob's job template) is."""
    name = job["metadata"]["name"]
    template = pod_template(job)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": dict(template["metadata"]["labels"])},
            "spec": adapted(name, template["spec"])}


def deployment(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    template = doc["spec"]["template"]
    template["spec"] = adapted(doc["metadata"]["name"], template["spec"])
    return doc


def plan(docs: list[dict]) -> Plan:
    """Sort rendered objects into what kube play runs; unknown kinds are an error."""
    result = Plan()
    for doc in docs:
        kind = doc["kind"]
        if kind in LEFT_OUT:
            continue
        if kind == "ConfigMap":
            result.config_maps.append(doc)
        elif kind == "PersistentVolumeClaim":
            result.claims.append(doc)
        elif kind == "Secret":
            result.secrets[doc["metadata"]["name"]] = secret_values(doc)
        elif kind == "Job":
            result.jobs[app_name(doc)] = job_pod(doc)
        elif kind == "CronJob":
            result.cron_jobs[app_name(doc)] = job_pod(doc)
        elif kind == "Deployment":
            result.deployments[app_name(doc)] = deployment(doc)
        else:
            raise ValueError(f"kube play cannot run {kind}/{doc['metadata']['name']}")
    return result


def container_names(pod: dict) -> list[str]:
    """The names podman gives a played Pod's or Deployment's main containers."""
    if pod["kind"] == "Deployment":
        pod_name, spec = f"{pod['metadata']['name']}-pod-0", pod["spec"]["template"]["spec"]
    else:
        pod_name, spec = pod["metadata"]["name"], pod["spec"]
    return [f"{pod_name}-{c['name']}" for c in spec["containers"]]


def pod_name(workload: dict) -> str:
    name = workload["metadata"]["name"]
    return f"{name}-pod-0" if workload["kind"] == "Deployment" else name
