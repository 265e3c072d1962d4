"""Serving benchmark: the whole stack on one box, against a bare gRPC echo server.

Starts real stores and the four services on the exported ml-1m artifacts (like
``make run``), then measures at several concurrencies: the echo server (the floor of
one Python gRPC hop), gateway ``Recommend`` cache hits, and cache misses for each
query kind (profile, liked ids, user id: every request distinct, Redis flushed
first), with requests/s and p50/p99; then a per-hop breakdown from the services'
Prometheus histograms, and PNG plots in docs/.

    .venv/bin/python benchmarks/serving_bench.py [--total 3000] [--concurrency 1,8,32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, Processes, header, load  # noqa: E402
from movierec.data.source import load_dataset  # noqa: E402
from movierec.stack.prepare import load_catalog, load_vectors  # noqa: E402
from movierec.stack.stores import LocalStores  # noqa: E402

RECOMMEND = "movierec.gateway.v1.Gateway.Recommend"


def miss_requests(kind: str, n: int, seed: int) -> list[dict]:
    """``n`` distinct requests of one kind, drawn from ml-1m."""
    rng = np.random.default_rng(seed)
    data = load_dataset("ml-1m")
    if kind == "profile":
        return [{"profile": {"age": int(a), "gender": g, "occupation": int(o)}, "topK": 10}
                for a, g, o in zip(rng.integers(1, 121, n), rng.choice(["M", "F"], n),
                                   rng.integers(0, 21, n), strict=True)]
    if kind == "liked":
        popular = data.ratings.movie_id.value_counts().index[:600].to_numpy()
        return [{"liked": {"movieIds": [int(x) for x in rng.choice(popular, 3, replace=False)]},
                 "topK": 10} for _ in range(n)]
    users = rng.permutation(data.users.user_id.to_numpy())[:n]
    return [{"userId": int(u), "topK": 10} for u in users]


def hops(procs: Processes) -> dict:
    """Mean server-side latency (ms) per service and method from /metrics."""
    out = {}
    for name in ("gateway", "embedder", "retriever", "catalog"):
        port = procs.env[f"{name.upper()}_METRICS_PORT"]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
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


def scenarios(procs: Processes, redis_url: str, total: int, levels: list[int]) -> list[dict]:
    rows, gateway = [], procs.env["GATEWAY_ADDR"]
    echo = procs.echo()
    flush = redis.Redis.from_url(redis_url).flushdb
    hit = [{"profile": {"age": 25, "gender": "F", "occupation": 4}, "topK": 10}]
    for c in levels:
        rows.append({"scenario": "echo", **load("movierec.echo.v1.Echo.Echo", echo,
                                                {"payload": "eA=="}, total, c)})
        load(RECOMMEND, gateway, hit, 10, 1)
        rows.append({"scenario": "cache hit", **load(RECOMMEND, gateway, hit, total, c)})
        for kind in ("profile", "liked", "user"):
            flush()
            data = miss_requests(kind, min(total, 6000), seed=c)
            rows.append({"scenario": f"miss {kind}", **load(RECOMMEND, gateway, data,
                                                           len(data), c)})
    for row in rows:
        print(json.dumps(row))
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
                rows = scenarios(procs, addresses["REDIS_URL"], args.total,
                                 [int(c) for c in args.concurrency.split(",")])
                print(json.dumps({"per_hop_mean_ms": hops(procs)}))
            plot(rows, args.plot)
        finally:
            stores.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
