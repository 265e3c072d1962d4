"""Open-loop latency benchmark: each miss kind's capacity, its latency at a fixed share of
that capacity, one request at a time, and where a single request's milliseconds go.

Starts the stack as ``benchmarks/serving_bench.py`` does (real PostgreSQL, Redis and
Milvus, the four services as processes on the artifacts of ``--artifacts``) and, for
each miss kind (profile, liked ids, user id: requests with pairwise distinct cache keys
from the builders of the ghz ``*_miss`` configs, Redis flushed before every run):

a. **capacity**: a closed loop at ``--in-flight`` (8) requests in flight. Reported as
   req/s, and as **req/s per busy core** = requests ÷ the CPU seconds (user + system,
   from /proc) every process used during the run: the services, PostgreSQL, Redis,
   Milvus and this driver. ``busy cores`` = those CPU seconds ÷ the run's wall seconds;
   ``cores`` is the machine's count (os.cpu_count()).
b. **open loop** at ``--fraction`` (0.5) of that capacity for ``--seconds`` (20):
   Poisson arrivals at a fixed rate (``movierec loadtest``'s ``rps`` mode), no cap on
   calls in flight, **latency from each request's scheduled time**; p50 / p99 / max,
   count, errors, and the driver's own lateness (p99 of how late it started requests).
c. **single**: one request at a time (``--single`` requests, 200) on the otherwise idle
   stack, after a pause: p50 / p99 / mean.
d. **per hop** of (c): mean server-side time per service and method, from the deltas of
   each service's ``movierec_rpc_latency_seconds`` histogram around the run, and the
   gateway's client-side view of each outbound call (``movierec_client_latency_seconds``),
   so the client-observed mean splits into: driver and the inbound hop (client mean −
   gateway ``Recommend``), the gateway's own work (``Recommend`` − its outbound calls as
   it saw them), each outbound hop's transport (gateway's view − the callee's own
   time) and each callee's own time (the retriever's includes its Milvus search).

Objective checked in the table (issue "Architecture II", item 5): open-loop p99 ≤ 30 ms
for every kind; single-request p50 ≤ 6 / 8 / 10 ms (profile / liked / user).

    MOVIELENS_DIR=../shared/data/ml-1m .venv/bin/python benchmarks/open_loop.py \\
        [--kinds profile,liked,user] [--fraction 0.5] [--seconds 20] [--single 200] \\
        [--artifacts DIR] [--json-out docs/open_loop.json]

Uses only helpers that exist unchanged since commit cd9e60c (``benchmarks/common.py``,
``benchmarks/serving_bench.py``, ``movierec.stack``), so it measures a baseline checkout
too, given this checkout's ``movierec/loadtest.py`` (the open-loop driver) copied there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, Processes, command_line, header  # noqa: E402
from benchmarks.serving_bench import (  # noqa: E402
    RECOMMEND,
    measured,
    metrics_text,
    miss_requests,
)
from movierec import loadtest  # noqa: E402
from movierec.stack.prepare import load_catalog, load_vectors  # noqa: E402
from movierec.stack.stores import LocalStores  # noqa: E402

KINDS = ("profile", "liked", "user")
OBJECTIVE_P99_MS = 30.0
OBJECTIVE_SINGLE_P50_MS = {"profile": 6.0, "liked": 8.0, "user": 10.0}
SERVICES = ("gateway", "embedder", "retriever", "catalog")
SEEDS = {"warmup": 101, "capacity": 102, "open": 103, "single": 104}


def drive(host: str, data: list[dict], total: int, *, concurrency: int = 0,
          rps: float | None = None, seed: int = 0) -> dict:
    """One ``movierec loadtest`` run of ``total`` of ``data`` (closed loop at
    ``concurrency``, or open loop at ``rps`` with no cap); a flat row in ms."""
    config = {"call": RECOMMEND, "host": host, "data": data, "total": total,
              "concurrency": concurrency, "timeout": "5s"}
    if rps:
        config.update(rps=rps, arrival="poisson", seed=seed)
    result = uvloop.run(loadtest.run(config))
    report = loadtest.summary(result)
    ms = np.asarray(result.latencies) * 1000
    pct = (lambda q: round(float(np.percentile(ms, q)), 2)) if len(ms) else (lambda q: None)
    ok = report["statusCodeDistribution"].get("OK", 0)
    row = {"count": report["count"], "ok": ok, "errors": report["count"] - ok,
           "seconds": round(result.elapsed, 2), "rps": round(report["rps"], 1),
           "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
           "max_ms": round(float(ms.max()), 2) if len(ms) else None,
           "mean_ms": round(float(ms.mean()), 3) if len(ms) else None}
    if report["errorDistribution"]:
        row["error_kinds"] = report["errorDistribution"]
    if rps:
        row["rps_target"] = round(rps, 1)
        row["lateness_p99_ms"] = round(report["latenessP99"], 2)
    return row


LABELS = re.compile(r'(\w+)="([^"]*)"')


def histograms(procs: Processes) -> dict[tuple[str, ...], list[float]]:
    """[sum s, count] now, summed over status codes: ``(process, method)`` for
    ``movierec_rpc_latency_seconds`` (server side), ``(process, target, method)`` for
    ``movierec_client_latency_seconds`` (a process's outbound calls)."""
    out: dict[tuple[str, ...], list[float]] = {}
    for name in SERVICES:
        if name not in procs.procs:
            continue
        for line in metrics_text(procs, name).splitlines():
            for metric, kind in (("movierec_rpc_latency_seconds", "server"),
                                 ("movierec_client_latency_seconds", "client")):
                for slot, suffix in enumerate(("_sum{", "_count{")):
                    if line.startswith(metric + suffix):
                        labels = dict(LABELS.findall(line[line.index("{"):line.rindex("}")]))
                        key = ((name, labels["method"]) if kind == "server" else
                               (name, labels.get("target", "?"), labels["method"]))
                        out.setdefault(key, [0.0, 0.0])[slot] += float(line.rsplit(" ", 1)[1])
    return out


def per_hop(before: dict, after: dict, requests: int, client_mean_ms: float | None) -> dict:
    """Where the mean single request's milliseconds went, from histogram deltas."""
    def delta(key):
        b = before.get(key, [0.0, 0.0])
        return after[key][0] - b[0], after[key][1] - b[1]

    server, client = {}, {}
    for key in after:
        seconds, calls = delta(key)
        if calls <= 0:
            continue
        entry = {"calls_per_request": round(calls / requests, 3),
                 "mean_ms": round(1000 * seconds / calls, 3),
                 "ms_per_request": round(1000 * seconds / requests, 3)}
        if len(key) == 2:
            server[f"{key[0]} {key[1]}"] = entry
        else:
            client[f"{key[0]} -> {key[1]} {key[2]}"] = entry
    gateway = server.get("gateway Recommend", {}).get("ms_per_request")
    split: dict[str, float] = {}
    if client_mean_ms is not None and gateway is not None:
        split["driver and inbound hop"] = round(client_mean_ms - gateway, 3)
    outbound = {k: v for k, v in client.items() if k.startswith("gateway -> ")}
    if gateway is not None:
        split["gateway own work"] = round(
            gateway - sum(v["ms_per_request"] for v in outbound.values()), 3)
    for name, view in outbound.items():
        target, method = name.split(" -> ", 1)[1].rsplit(" ", 1)
        callee = f"{target} {method}" if f"{target} {method}" in server else next(
            (k for k in server if k.endswith(f" {method}") and not k.startswith("gateway ")),
            None)
        own = server[callee]["ms_per_request"] if callee else 0.0
        label = callee or name
        split[f"hop to {label}"] = round(view["ms_per_request"] - own, 3)
        if callee:
            split[callee] = own
    return {"requests": requests, "client_mean_ms": client_mean_ms,
            "server": server, "gateway_client": outbound, "split_ms": split}


def measure_kind(procs: Processes, stores: LocalStores, kind: str, args) -> dict:
    gateway = procs.env["GATEWAY_ADDR"]
    flush = redis.Redis.from_url(stores.addresses["REDIS_URL"]).flushdb

    def requests(phase: str, n: int) -> list[dict]:
        return miss_requests(kind, n, SEEDS[phase])

    out: dict = {"kind": kind}
    if args.warmup:
        flush()
        data = requests("warmup", args.warmup)
        drive(gateway, data, len(data), concurrency=args.in_flight)

    flush()
    data = requests("capacity", args.capacity_total)
    row = measured(procs, stores, lambda: drive(gateway, data, len(data),
                                                concurrency=args.in_flight))
    cpu_s = sum(row["cpu_ms_per_request"].values()) * row["count"] / 1000
    row.update(in_flight=args.in_flight, cpu_seconds=round(cpu_s, 2),
               busy_cores=round(cpu_s / row["seconds"], 2) if row["seconds"] else None,
               rps_per_busy_core=round(row["count"] / cpu_s, 1) if cpu_s else None,
               cores=os.cpu_count())
    out["capacity"] = row
    print(f"# {kind} capacity: {json.dumps(row)}", flush=True)

    flush()
    rate = args.fraction * row["rps"]
    data = requests("open", max(1, round(rate * args.seconds)))
    total = min(len(data), round(rate * args.seconds))
    if total < round(rate * args.seconds):
        print(f"# {kind}: only {len(data)} distinct requests; the open loop sends those")
    time.sleep(args.pause)
    out["open_loop"] = measured(procs, stores, lambda: drive(
        gateway, data, total, rps=rate, seed=SEEDS["open"]))
    out["open_loop"]["fraction"] = args.fraction
    print(f"# {kind} open loop: {json.dumps(out['open_loop'])}", flush=True)

    flush()
    data = requests("single", args.single)
    time.sleep(args.pause)
    before = histograms(procs)
    out["single"] = measured(procs, stores, lambda: drive(gateway, data, len(data),
                                                          concurrency=1))
    out["per_hop"] = per_hop(before, histograms(procs), out["single"]["count"],
                             out["single"]["mean_ms"])
    print(f"# {kind} single: {json.dumps(out['single'])}", flush=True)
    print(f"# {kind} per hop: {json.dumps(out['per_hop'])}", flush=True)
    out["objective"] = {
        "open_loop_p99_ms": OBJECTIVE_P99_MS, "single_p50_ms": OBJECTIVE_SINGLE_P50_MS[kind],
        "met": bool(out["open_loop"]["errors"] == 0 and out["open_loop"]["p99_ms"] is not None
                    and out["open_loop"]["p99_ms"] <= OBJECTIVE_P99_MS
                    and out["single"]["p50_ms"] is not None
                    and out["single"]["p50_ms"] <= OBJECTIVE_SINGLE_P50_MS[kind])}
    return out


def verdict(row: dict) -> str:
    """Which half of the objective a kind meets."""
    ol, one, goal = row["open_loop"], row["single"], row["objective"]
    p99 = ol["errors"] == 0 and ol["p99_ms"] is not None and ol["p99_ms"] <= OBJECTIVE_P99_MS
    p50 = one["p50_ms"] is not None and one["p50_ms"] <= goal["single_p50_ms"]
    return f"p99 {'met' if p99 else 'NOT met'}, p50 {'met' if p50 else 'NOT met'}"


def table(rows: list[dict]) -> str:
    head = ("| kind | capacity req/s (c={c}) | busy cores | req/s per busy core | open loop "
            "target / achieved req/s | open p50 / p99 / max ms | errors | driver lateness "
            "p99 ms | single p50 / p99 / mean ms | objective (p99 ≤ 30, p50 ≤ 6/8/10) |")
    lines = [head.format(c=rows[0]["capacity"]["in_flight"] if rows else 8),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        cap, ol, one = r["capacity"], r["open_loop"], r["single"]
        lines.append(
            f"| {r['kind']} | {cap['rps']:.0f} | {cap['busy_cores']} | "
            f"{cap['rps_per_busy_core']} | {ol['rps_target']:.0f} / {ol['rps']:.0f} | "
            f"{ol['p50_ms']} / {ol['p99_ms']} / {ol['max_ms']} | {ol['errors']} | "
            f"{ol['lateness_p99_ms']} | {one['p50_ms']} / {one['p99_ms']} / {one['mean_ms']} | "
            f"{verdict(r)} |")
    for r in rows:
        hop = r["per_hop"]
        parts = [f"{k} {v:.2f}" for k, v in hop["split_ms"].items()]
        lines.append(f"\nper hop, {r['kind']} (mean ms per request, client "
                     f"{hop['client_mean_ms']}): " + "; ".join(parts))
        for name, entry in hop["server"].items():
            if entry["ms_per_request"] < 0.01:  # health checks, rare catalog-version reads
                continue
            lines.append(f"  server {name}: {entry['mean_ms']:.3f} ms x "
                         f"{entry['calls_per_request']} calls")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="open-loop rate as a share of the measured capacity")
    parser.add_argument("--seconds", type=float, default=20.0, help="open-loop length")
    parser.add_argument("--in-flight", type=int, default=8, help="capacity run's concurrency")
    parser.add_argument("--capacity-total", type=int, default=2000,
                        help="requests in the capacity run")
    parser.add_argument("--single", type=int, default=200,
                        help="requests sent one at a time")
    parser.add_argument("--warmup", type=int, default=100,
                        help="requests per kind before its capacity run (not reported)")
    parser.add_argument("--pause", type=float, default=2.0,
                        help="seconds of idle before the open-loop and single runs")
    parser.add_argument("--artifacts", type=Path,
                        default=Path(os.environ.get("MOVIEREC_ARTIFACTS",
                                                    str(ROOT / "artifacts"))))
    parser.add_argument("--json-out", type=Path, default=ROOT / "docs" / "open_loop.json")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown kinds {sorted(unknown)}; choose from {KINDS}")
    if not hasattr(loadtest, "schedule"):
        raise SystemExit("this checkout's movierec/loadtest.py has no open-loop mode: copy "
                         "movierec/loadtest.py from a checkout that has it")
    artifacts = args.artifacts.resolve()
    os.environ["MOVIEREC_ARTIFACTS"] = str(artifacts)  # load_vectors reads the newest here
    header("open-loop latency benchmark")
    print(f"# artifacts: {artifacts}")
    with tempfile.TemporaryDirectory() as tmp:
        stores = LocalStores(root=Path(tmp) / "stores", durable=False, environ={})
        addresses = stores.start()
        try:
            load_catalog(addresses["DATABASE_URL"], "ml-1m")
            load_vectors(addresses["MILVUS_URI"], "ml-1m")
            env = {**addresses, "MOVIEREC_LOG_LEVEL": "WARNING",
                   "MOVIEREC_ARTIFACTS": str(artifacts)}
            with Processes(env, Path(tmp) / "logs") as procs:
                for name in ("catalog", "retriever", "embedder", "gateway"):
                    procs.start(name)
                rows = [measure_kind(procs, stores, kind, args) for kind in kinds]
        finally:
            stores.stop()
    print(table(rows))
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({
        "command": command_line(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(), "artifacts": str(artifacts), "fraction": args.fraction,
        "seconds": args.seconds, "objective": {"open_loop_p99_ms": OBJECTIVE_P99_MS,
                                               "single_p50_ms": OBJECTIVE_SINGLE_P50_MS},
        "kinds": rows}, indent=1))
    print(f"json: {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
