"""What the kube smoke test asks the deployed stack, and what it measures.

Readiness is the services' own gRPC health status (the probes' source in a cluster)
and the web facade's /api/health. Answers are checked against the data set the jobs
loaded and the artifact versions the train job wrote: real movies with their catalog
titles, the versions of the trained models, liked and already-rated movies left out,
and the web facade returning what the gateway returns. Through a retrain, a loop of
calls (``Traffic``) records every answer, and the served versions are polled until they
are the promoted ones.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from usage import Container, Sampler

from movierec import registry
from movierec.common.v1 import common_pb2
from movierec.data.movielens import MovieLens
from movierec.data.source import load_dataset
from movierec.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from movierec.models import registry as models

GATEWAY = f"127.0.0.1:{registry.GATEWAY.port}"
WEB = f"http://127.0.0.1:{registry.WEB.port}"
TOP = 5
BURST = 1200
CONCURRENCY = 8
TRAFFIC_TOP = 7      # not the burst's top_k: the loop's answers are not its cached ones
TRAFFIC_PAUSE = 0.05  # seconds between the loop's calls (the retrain needs the CPU)


def dataset_of(load_catalog_pod: dict) -> MovieLens:
    """The data set the load-catalog job loaded (its ``--dataset`` argument)."""
    args = load_catalog_pod["spec"]["containers"][0]["args"]
    return load_dataset(args[args.index("--dataset") + 1])


def _health(port: int) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _web_health() -> str:
    try:
        with urllib.request.urlopen(f"{WEB}/api/health", timeout=2) as reply:
            return "SERVING" if reply.status == 200 else str(reply.status)
    except (urllib.error.URLError, OSError) as exc:
        return type(exc).__name__


def wait_ready(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = {s.name: _health(s.port) for s in registry.SERVICES if s.protocol == "grpc"}
        status["web"] = _web_health()
        if all(v == "SERVING" for v in status.values()):
            print(f"kube-smoke: every service is SERVING: {sorted(status)}", flush=True)
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"kube-smoke: not ready after {timeout:.0f} s: {status}")
        time.sleep(2)


def artifact_versions(artifacts: Path, pointer: str = "LATEST") -> dict[str, str]:
    """Each model's version that ``artifacts/<model>/<pointer>`` names."""
    return {m: (artifacts / m / pointer).read_text().strip() for m in models.NAMES}


def _known_user(data: MovieLens) -> int:
    counts = data.ratings["user_id"].value_counts()
    return int(counts[counts >= 20].index[-1])  # a user with a real but short history


def _check(reply, data: MovieLens, model: str, version: str, hidden: set[int]) -> list[int]:
    titles = dict(zip(data.movies["movie_id"], data.movies["title"], strict=True))
    ids = [item.movie_id for item in reply.items]
    assert len(ids) == TOP and len(set(ids)) == TOP, ids
    assert all(titles.get(item.movie_id) == item.title for item in reply.items), reply
    assert not hidden & set(ids), (hidden & set(ids), ids)
    assert reply.model_version == f"{model}@{version}", (reply.model_version, version)
    return ids


def _web_recommend(body: dict) -> list[int]:
    request = urllib.request.Request(f"{WEB}/api/recommend", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return [item["movie_id"] for item in json.load(reply)["items"]]


def check_answers(data: MovieLens, artifacts: Path) -> dict[str, list[int]]:
    """Recommend for a profile, a liked list and a user id; the checks raise on failure."""
    versions = artifact_versions(artifacts)
    popular = data.ratings["movie_id"].value_counts().index[:3].tolist()
    user = _known_user(data)
    seen = set(data.ratings.loc[data.ratings["user_id"] == user, "movie_id"].tolist())
    with grpc.insecure_channel(GATEWAY) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        ask = lambda **kw: stub.Recommend(gateway_pb2.RecommendRequest(top_k=TOP, **kw),  # noqa: E731
                                          timeout=10)
        answers = {
            "profile": _check(ask(profile=common_pb2.Profile(age=25, gender="F",
                                                             occupation=4)),
                              data, "fusion", versions["fusion"], set()),
            "liked": _check(ask(liked=common_pb2.LikedMovies(movie_ids=popular)),
                            data, "pinsage", versions["pinsage"], set(popular)),
            "user": _check(ask(user_id=user), data, "pinsage", versions["pinsage"], seen),
            "next": _check(ask(next_for_user_id=user), data, "sasrec", versions["sasrec"],
                           seen),
        }
    web = _web_recommend({"liked": {"movie_ids": popular}, "top_k": TOP})
    assert web == answers["liked"], (web, answers["liked"])
    print(f"kube-smoke: real answers for a profile, liked {popular}, user {user} "
          f"({len(seen)} rated movies hidden) and through the web facade", flush=True)
    return answers


def _requests(data: MovieLens, top_k: int = 10) -> list[gateway_pb2.RecommendRequest]:
    """Distinct requests (the answer cache must not serve them all)."""
    users = data.users["user_id"].tolist()
    movies = data.movies["movie_id"].tolist()
    out = []
    for i in range(BURST):
        kind = i % 3
        if kind == 0:
            query = {"profile": common_pb2.Profile(age=18 + i % 40, gender="MF"[i % 2],
                                                   occupation=i % 21)}
        elif kind == 1:
            query = {"liked": common_pb2.LikedMovies(
                movie_ids=[movies[(i * 7 + k) % len(movies)] for k in range(3)])}
        else:
            query = {"user_id": users[i % len(users)]}
        out.append(gateway_pb2.RecommendRequest(top_k=top_k, **query))
    return out


def measure(running: dict[str, Container], data: MovieLens) -> dict[str, dict]:
    """Idle memory, then memory and CPU through a burst of distinct requests."""
    idle = {app: c.rss() for app, c in running.items()}
    cpu0 = {app: c.cpu_seconds() for app, c in running.items()}
    requests = _requests(data)
    with grpc.insecure_channel(GATEWAY) as channel, Sampler(list(running.values()), 0.2):
        stub = gateway_pb2_grpc.GatewayStub(channel)
        start = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(lambda r: stub.Recommend(r, timeout=10), requests))
        wall = time.monotonic() - start
    print(f"kube-smoke: {BURST} distinct Recommend calls in {wall:.1f} s "
          f"({BURST / wall:.0f}/s, {CONCURRENCY} at a time)", flush=True)
    return {app: {"idle_rss_mib": round(idle[app] / 2**20),
                  "peak_rss_mib": round(c.peak_rss / 2**20),
                  "burst_cpu_cores": round((c.cpu_seconds() - cpu0[app]) / wall, 2),
                  "burst_rps": round(BURST / wall)}
            for app, c in running.items()}


def served_versions(data: MovieLens) -> dict[str, str]:
    """The ``model_version`` Recommend answers with: a profile (fusion's path) and a
    known user's id (PinSage's) and what they will watch next (SASRec's)."""
    asks = {"fusion": gateway_pb2.RecommendRequest(
                top_k=TOP, profile=common_pb2.Profile(age=25, gender="F", occupation=4)),
            "pinsage": gateway_pb2.RecommendRequest(top_k=TOP, user_id=_known_user(data)),
            "sasrec": gateway_pb2.RecommendRequest(top_k=TOP,
                                                   next_for_user_id=_known_user(data))}
    with grpc.insecure_channel(GATEWAY) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        return {m: stub.Recommend(r, timeout=10).model_version for m, r in asks.items()}


def wait_for_versions(data: MovieLens, wanted: dict[str, str], timeout: float) -> float:
    """Seconds until both paths answer with ``wanted`` (model -> version)."""
    start = time.monotonic()
    expected = {m: f"{m}@{v}" for m, v in wanted.items()}
    while True:
        served = served_versions(data)
        if served == expected:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise SystemExit(f"kube-smoke: after {timeout:.0f} s the gateway answers with "
                             f"{served}, not the promoted {expected}")
        time.sleep(0.5)


class Traffic:
    """Recommend through the gateway, one call after another until stopped (profiles,
    liked lists and user ids, distinct): counts the answers, keeps every failure (an
    error, or not ``TRAFFIC_TOP`` distinct movies) and when each model version first
    answered."""

    def __init__(self, data: MovieLens) -> None:
        self.requests = _requests(data, TRAFFIC_TOP)
        self.answers = 0
        self.failures: list[str] = []
        self.first_seen: dict[str, float] = {}   # model_version -> seconds into the loop
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        with grpc.insecure_channel(GATEWAY) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            calls = 0
            while not self._stop.is_set():
                request = self.requests[calls % len(self.requests)]
                calls += 1
                try:
                    reply = stub.Recommend(request, timeout=10)
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code().name}: {exc.details()}")
                else:
                    ids = {item.movie_id for item in reply.items}
                    if len(ids) != TRAFFIC_TOP or len(reply.items) != TRAFFIC_TOP:
                        self.failures.append(f"{len(reply.items)} items for {request}")
                    else:
                        self.answers += 1
                    self.first_seen.setdefault(reply.model_version,
                                               round(time.monotonic() - start, 1))
                self._stop.wait(TRAFFIC_PAUSE)
        self.seconds = time.monotonic() - start

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def summary(self) -> dict:
        return {"calls": self.answers + len(self.failures), "ok": self.answers,
                "failures": len(self.failures), "seconds": round(self.seconds, 1),
                "versions_first_seen_s": dict(self.first_seen)}


def print_report(report: dict) -> None:
    print("| job | wall (s) | CPU (s) | peak RSS (MiB) |\n|---|---:|---:|---:|")
    for name, row in report["jobs"].items():
        print(f"| {name} | {row['wall_s']} | {row['cpu_s']} | {row['peak_rss_mib']} |")
    print("| service | idle RSS (MiB) | peak RSS (MiB) | CPU cores in the burst |\n"
          "|---|---:|---:|---:|")
    for name, row in report["services"].items():
        print(f"| {name} | {row['idle_rss_mib']} | {row['peak_rss_mib']} | "
              f"{row['burst_cpu_cores']} |")
    if "retrain" in report:
        row, calls = report["retrain"], report["retrain"]["traffic"]
        print(f"retrain: {row['before']} -> {row['after']}; the gateway served the "
              f"promoted versions {row['switch_s']} s after the job ended; "
              f"{calls['calls']} Recommend calls in {calls['seconds']} s, "
              f"{calls['failures']} failed")
