"""Serving benchmark: the whole stack on one box, against a bare gRPC echo server.

Starts real stores and the four services on the exported ml-1m artifacts (like
``make run``), then measures at several concurrencies: the echo server (the floor of
one Python gRPC hop), gateway ``Recommend`` cache hits, and cache misses for each
query kind (profile, liked ids, user id). A miss run is made of requests with distinct
cache keys, sent once each (the driver hands them out round-robin across workers, as
ghz does), after Redis was flushed; the gateway's cache counters are read before and
after each run and printed, so a "miss" row with any hit or coalesced call is visibly
not one. Each row also has the CPU time per request of every process (services, stores,
echo and this driver, from /proc). Results go to JSON (``--json-out``, the input of
``benchmarks/serving_check.py``) and a PNG plot.

    .venv/bin/python benchmarks/serving_bench.py [--total 3000] [--concurrency 1,8,32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    ROOT,
    Processes,
    command_line,
    cpu_seconds,
    cpu_ticks,
    header,
    load,
    steal_percent,
)
from loadtest.ghz.generate import (  # noqa: E402
    liked_miss_requests,
    profile_miss_requests,
    user_miss_requests,
)
from movierec import registry  # noqa: E402
from movierec.data.source import load_dataset  # noqa: E402
from movierec.stack.prepare import load_catalog, load_vectors  # noqa: E402
from movierec.stack.stores import LocalStores  # noqa: E402

RECOMMEND = "movierec.gateway.v1.Gateway.Recommend"


def miss_requests(kind: str, n: int, seed: int) -> list[dict]:
    """``n`` requests of one kind with pairwise distinct cache keys, drawn from ml-1m (the
    builders of the ghz ``*_miss`` configs)."""
    build = {"profile": profile_miss_requests, "liked": liked_miss_requests,
             "user": user_miss_requests}[kind]
    return build(load_dataset("ml-1m"), n, seed)


def metrics_text(procs: Processes, service: str) -> str:
    """What ``service``'s Prometheus endpoint shows now."""
    port = procs.env[registry.get(service).metrics_env]
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()


def cache_counters(procs: Processes) -> dict[str, float]:
    """The gateway's ``movierec_gateway_cache_total`` counters by event."""
    text = metrics_text(procs, "gateway")
    return {line.split('event="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("movierec_gateway_cache_total{")}


def search_calls(procs: Processes) -> tuple[float, float]:
    """(query vectors, Milvus search calls) the retriever has made so far."""
    text = metrics_text(procs, "retriever")
    found = {line.split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line.startswith("movierec_retriever_queries_per_search_")}
    return (found.get("movierec_retriever_queries_per_search_sum", 0.0),
            found.get("movierec_retriever_queries_per_search_count", 0.0))


def measured(procs: Processes, stores: LocalStores, run) -> dict:
    """``run()``'s row plus cache-counter deltas, the retriever's query vectors per Milvus
    search, CPU ms per request per process and the share of the machine's CPU time the
    hypervisor gave to others meanwhile (``steal_pct``)."""
    counters, cpu = cache_counters(procs), all_cpu(procs, stores)
    searches, ticks = search_calls(procs), cpu_ticks()
    row = run()
    row["steal_pct"] = steal_percent(ticks, cpu_ticks())
    after, cpu_after = cache_counters(procs), all_cpu(procs, stores)
    queries, calls = (b - a for a, b in zip(searches, search_calls(procs), strict=True))
    row["queries_per_milvus_search"] = round(queries / calls, 2) if calls else None
    row["cache"] = {k: int(after.get(k, 0) - counters.get(k, 0)) for k in after}
    row["cpu_ms_per_request"] = {k: round(1000 * (cpu_after[k] - cpu[k]) / row["count"], 3)
                                 for k in cpu_after if row["count"]}
    return row


def profiled(procs: Processes, out: Path | None, tag: str, seconds: float, run):
    """``run()`` while py-spy samples every service process for ``seconds``; the
    collapsed stacks go to ``out/<tag>-<service>.txt`` (nothing when ``out`` is None)."""
    if out is None:
        return run()
    out.mkdir(parents=True, exist_ok=True)
    spies = [subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record",
                               "--pid", str(proc.pid), "--duration", str(int(seconds)),
                               "--rate", "250", "--format", "raw", "--nonblocking",
                               "--output", str(out / f"{tag}-{name}.txt")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name, proc in procs.procs.items() if name != "echo"]
    try:
        return run()
    finally:
        for spy in spies:
            spy.wait(seconds + 30)


def all_cpu(procs: Processes, stores: LocalStores) -> dict[str, float]:
    out = procs.cpu_seconds()
    for name, server in stores.started.items():
        proc = getattr(server, "proc", None)
        if proc is not None:
            out[name] = cpu_seconds(proc.pid)
    out["driver"] = sum(os.times()[:2])
    return out


def hops(procs: Processes) -> dict:
    """Mean server-side latency (ms) per service and method from /metrics."""
    out = {}
    for name in ("gateway", "embedder", "retriever", "catalog"):
        text = metrics_text(procs, name)
        sums, counts = {}, {}
        for line in text.splitlines():
            if line.startswith("movierec_rpc_latency_seconds_sum{"):
                method = line.split('method="')[1].split('"')[0]
                sums[method] = sums.get(method, 0) + float(line.rsplit(" ", 1)[1])
            if line.startswith("movierec_rpc_latency_seconds_count{"):
                method = line.split('method="')[1].split('"')[0]
                counts[method] = counts.get(method, 0) + float(line.rsplit(" ", 1)[1])
        out[name] = {m: round(1000 * sums[m] / counts[m], 3) for m in sums if counts.get(m)}
    return out


def scenarios(procs: Processes, stores: LocalStores, total: int,
              levels: list[int], profile: Path | None = None) -> list[dict]:
    rows, gateway = [], procs.env["GATEWAY_ADDR"]
    echo = procs.echo()
    flush = redis.Redis.from_url(stores.addresses["REDIS_URL"]).flushdb
    hit = [{"profile": {"age": 25, "gender": "F", "occupation": 4}, "topK": 10}]
    for c in levels:
        rows.append({"scenario": "echo", **measured(procs, stores, lambda c=c: load(
            "movierec.echo.v1.Echo.Echo", echo, {"payload": "eA=="}, total, c))})
        load(RECOMMEND, gateway, hit, 10, 1)
        rows.append({"scenario": "cache hit", **measured(procs, stores, lambda c=c: load(
            RECOMMEND, gateway, hit, total, c))})
        for kind in ("profile", "liked", "user"):
            flush()
            data = miss_requests(kind, min(total, 5000), seed=c)
            spy = profile if c == 8 else None
            rows.append({"scenario": f"miss {kind}", **measured(
                procs, stores, lambda d=data, c=c, k=kind, spy=spy: profiled(
                    procs, spy, f"miss-{k}", 4, lambda: load(RECOMMEND, gateway, d,
                                                              len(d), c)))})
        for row in rows[-5:]:
            print(json.dumps(row), flush=True)
    return rows


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(r["scenario"] for r in rows):
        mine = [r for r in rows if r["scenario"] == name]
        xs = [r["concurrency"] for r in mine]
        left.plot(xs, [r["rps"] for r in mine], marker="o", label=name)
        right.plot(xs, [r["p99_ms"] for r in mine], marker="o", label=name)
    left.set(xscale="log", xlabel="concurrency", ylabel="requests/s", title="Throughput")
    right.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="p99 latency (ms)",
              title="p99 latency")
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=3000)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "serving.png")
    parser.add_argument("--json-out", type=Path, default=ROOT / "docs" / "serving.json")
    parser.add_argument("--profile", type=Path, help="py-spy every service during the misses "
                        "at 8 in flight; collapsed stacks go to this folder")
    args = parser.parse_args()
    header("serving benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        stores = LocalStores(root=Path(tmp) / "stores", durable=False, environ={})
        addresses = stores.start()
        try:
            load_catalog(addresses["DATABASE_URL"], "ml-1m")
            load_vectors(addresses["MILVUS_URI"], "ml-1m")
            env = {**addresses, "MOVIEREC_LOG_LEVEL": "WARNING",
                   "MOVIEREC_ARTIFACTS": os.environ.get("MOVIEREC_ARTIFACTS",
                                                        str(ROOT / "artifacts"))}
            with Processes(env, Path(tmp) / "logs") as procs:
                for name in ("catalog", "retriever", "embedder", "gateway"):
                    procs.start(name)
                rows = scenarios(procs, stores, args.total,
                                 [int(c) for c in args.concurrency.split(",")], args.profile)
                per_hop = hops(procs)
                print(json.dumps({"per_hop_mean_ms": per_hop}))
            args.json_out.write_text(json.dumps({"command": command_line(), "rows": rows,
                                                 "per_hop_mean_ms": per_hop}, indent=1))
            plot(rows, args.plot)
        finally:
            stores.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
