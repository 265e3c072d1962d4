"""Tracing overhead: CPU per cache miss with tracing off and on, in one run.

Starts real stores once and loads ml-1m (like ``benchmarks/serving_bench.py``), then
sets of the four services side by side: one without tracing and one per sampling rate
with it (``MOVIEREC_TRACE_FILE``, ``MOVIEREC_TRACE_SAMPLE``: 10 % by default;
``--sample 0,0.1,1`` splits the cost into what every request pays and what a recorded
one adds). Blocks of distinct-key misses of each kind (profile, liked ids, user id;
Redis flushed before each) go to each set in turn, the order rotating every round, so
the machine's drift (other jobs on it) falls on all alike. Each block is measured as
serving_bench measures a row (CPU ms per request of every process from /proc; the idle
sets are left out). Prints each block, then per miss kind and traced set the mean CPU
per miss of the services and of everything (services and stores), the ratio to the
untraced set, each round's ratio, and the spans each traced set wrote. Timings never
gate a test.

    MOVIELENS_DIR=../shared/data/ml-1m MOVIEREC_ARTIFACTS=DIR \\
        .venv/bin/python benchmarks/tracing_bench.py [--rounds 4] [--total 1000] \\
        [--sample 0.1] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, Processes, command_line, header, load  # noqa: E402
from benchmarks.serving_bench import RECOMMEND, measured, miss_requests  # noqa: E402
from movierec.stack.prepare import load_catalog, load_vectors  # noqa: E402
from movierec.stack.stores import LocalStores  # noqa: E402

SERVICES = ("catalog", "retriever", "embedder", "gateway")
KINDS = ("profile", "liked", "user")


def start(env: dict[str, str], logs: Path, concurrency: int) -> Processes:
    """The four services with ``env``, warmed by a few requests."""
    procs = Processes(env, logs)
    for name in SERVICES:
        procs.start(name)
    load(RECOMMEND, procs.env["GATEWAY_ADDR"], miss_requests("profile", 50, seed=99), 50,
         concurrency)
    return procs


def block(procs: Processes, stores: LocalStores, kind: str, data: list[dict],
          concurrency: int, tag: str) -> dict:
    """One measured block of misses against ``procs``, Redis flushed first."""
    redis.Redis.from_url(stores.addresses["REDIS_URL"]).flushdb()
    gateway = procs.env["GATEWAY_ADDR"]
    row = measured(procs, stores, lambda: load(RECOMMEND, gateway, data, len(data),
                                               concurrency))
    row.update(scenario=f"miss {kind}", tracing=tag)
    print(json.dumps(row), flush=True)
    return row


def rounds(sets: dict[str, Processes], stores: LocalStores, args: argparse.Namespace
           ) -> list[dict]:
    """``args.rounds`` rounds of one block per kind and set, the sets' order rotating."""
    rows, tags = [], list(sets)
    for i in range(args.rounds):
        order = tags[i % len(tags):] + tags[:i % len(tags)]
        for kind in KINDS:
            data = miss_requests(kind, args.total, seed=1000 + i)
            rows += [block(sets[tag], stores, kind, data, args.concurrency, tag)
                     for tag in order]
    return rows


def cpu(row: dict, services_only: bool) -> float:
    """CPU ms per request of the services (or of every process but the driver)."""
    return sum(v for k, v in row["cpu_ms_per_request"].items()
               if k != "driver" and (k in SERVICES or not services_only))


def compare(rows: list[dict], kind: str, tag: str) -> dict:
    """Set ``tag`` against "off" on ``kind`` misses: mean CPU per miss of the services
    and of everything, their ratio, and the services' ratio in each round (the blocks
    of a round ran back to back)."""
    off, on = ([r for r in rows if r["scenario"] == f"miss {kind}" and r["tracing"] == t]
               for t in ("off", tag))
    out: dict = {}
    for scope, only in (("services", True), ("all", False)):
        means = [statistics.mean(cpu(r, only) for r in group) for group in (off, on)]
        out[scope] = {"off": round(means[0], 3), "on": round(means[1], 3),
                      "ratio": round(means[1] / means[0], 3)}
    ratios = [cpu(b, True) / cpu(a, True) for a, b in zip(off, on, strict=True)]
    out["services"]["round_ratios"] = [round(x, 3) for x in ratios]
    out["services"]["median_round_ratio"] = round(statistics.median(ratios), 3)
    out["rps"] = {"off": round(statistics.mean(r["rps"] for r in off)),
                  "on": round(statistics.mean(r["rps"] for r in on))}
    return out


def summary(rows: list[dict]) -> dict:
    """Per miss kind, each traced set against the untraced one."""
    tags = [t for t in dict.fromkeys(r["tracing"] for r in rows) if t != "off"]
    return {kind: {tag: compare(rows, kind, tag) for tag in tags} for kind in KINDS}


def run(args: argparse.Namespace, tmp: Path) -> dict:
    stores = LocalStores(root=tmp / "stores", durable=False, environ={})
    addresses = stores.start()
    sets: dict[str, Processes] = {}
    try:
        load_catalog(addresses["DATABASE_URL"], "ml-1m")
        load_vectors(addresses["MILVUS_URI"], "ml-1m")
        base = {**addresses, "MOVIEREC_LOG_LEVEL": "WARNING",
                "MOVIEREC_ARTIFACTS": os.environ.get("MOVIEREC_ARTIFACTS",
                                                     str(ROOT / "artifacts"))}
        envs = {"off": base}
        for rate in args.sample.split(","):
            envs[f"on@{rate}"] = {**base, "MOVIEREC_TRACE_SAMPLE": rate,
                                  "MOVIEREC_TRACE_FILE": str(tmp / f"traces-{rate}.jsonl")}
        for tag, env in envs.items():
            sets[tag] = start(env, tmp / f"logs-{tag}", args.concurrency)
        rows = rounds(sets, stores, args)
    finally:
        for procs in sets.values():
            procs.stop()
        stores.stop()
    spans = {tag: len(Path(env["MOVIEREC_TRACE_FILE"]).read_text().splitlines())
             for tag, env in envs.items() if tag != "off"}
    return {"command": command_line(), "rows": rows, "spans_written": spans,
            "summary": summary(rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="blocks per kind and set")
    parser.add_argument("--total", type=int, default=1000, help="misses per block")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sample", default="0.1",
                        help="MOVIEREC_TRACE_SAMPLE of the traced set; several, comma-separated: "
                             "one traced set each (0,0.1,1 splits the cost)")
    parser.add_argument("--json-out", type=Path, help="write the rows and summary here")
    args = parser.parse_args()
    header("tracing overhead")
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    print(json.dumps({"spans_written": result["spans_written"],
                      "summary": result["summary"]}, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
