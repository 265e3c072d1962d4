"""Milvus server CPU per query: one query vector per search against several, and an
exclusion filter against asking for more hits and dropping them (the retriever's
batching, :mod:`movierec.services.retriever.batcher`).

A Milvus 2.3.5 server on a fresh data directory holds ``--n`` random clustered vectors
of ``--dim`` numbers (the MovieLens catalog's size and PinSage's width by default); the
asyncio client sends searches ``--concurrency`` at a time; the server's CPU seconds
(its whole process tree, /proc) and this client's (pymilvus: what the retriever spends)
are divided by the number of query vectors.
``--variants`` repeats the cases on a fresh server per Milvus setting (``VARIANTS``:
configuration edits and environment), ``--cases`` picks cases by their index.

    .venv/bin/python benchmarks/milvus_batching.py [--n 3883] [--dim 641] [--total 1600]
        [--variants defaults,no-quota,gogc-400,knowhere-1,thread-pools-2,defaults]
        [--cases 0,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import movierec.stack.local_milvus_server as milvus_server  # noqa: E402
from benchmarks.common import cpu_seconds, cpu_ticks, header, steal_percent  # noqa: E402
from benchmarks.retriever_bench import clustered  # noqa: E402
from movierec.services.retriever.loader import publish  # noqa: E402
from movierec.services.retriever.milvus import Filters, MilvusVectors  # noqa: E402

#: (label, query vectors per search, limit, excluded ids per search)
CASES = [("1 per search, top 30", 1, 30, 0), ("1 per search, top 30, 3 excluded", 1, 30, 3),
         ("1 per search, top 30, 200 excluded", 1, 30, 200),
         ("1 per search, top 230, no filter", 1, 230, 0), ("4 per search, top 30", 4, 30, 0),
         ("8 per search, top 30", 8, 30, 0), ("8 per search, top 60", 8, 60, 0),
         # a heavy user's whole history (ml-1m: 90th percentile ~ 400, max 2,314 ratings):
         # as a filter, or asked for and dropped by the retriever (what it does now)
         ("1 per search, top 30, 1000 excluded", 1, 30, 1000),
         ("1 per search, top 1030, no filter", 1, 1030, 0),
         ("1 per search, top 30, 2300 excluded", 1, 30, 2300),
         ("1 per search, top 2330, no filter", 1, 2330, 0)]

#: Milvus settings to compare: (edits of the rendered milvus.yaml, environment of the server)
VARIANTS = {
    "defaults": ((), {}),
    "no-quota": ((("quotaAndLimits:\n  enabled: true", "quotaAndLimits:\n  enabled: false"),),
                 {}),
    "gogc-400": ((), {"GOGC": "400"}),
    "knowhere-1": ((("knowhereThreadPoolNumRatio: 4", "knowhereThreadPoolNumRatio: 1"),), {}),
    "thread-pools-2": ((("highPriority: 10", "highPriority: 2"),
                        ("middlePriority: 5", "middlePriority: 2")), {}),
}


async def measure(store: MilvusVectors, live, queries: np.ndarray, pid: int, case: tuple,
                  total: int, concurrency: int) -> dict:
    label, per_search, limit, excluded = case
    rng = np.random.default_rng(0)
    gate = asyncio.Semaphore(concurrency)

    async def one(start: int) -> None:
        ids = rng.choice(live.count, excluded, replace=False) + 1 if excluded else []
        async with gate:
            await store.search(live, [q.tolist() for q in queries[start:start + per_search]],
                               limit, Filters(tuple(int(i) for i in ids)), 10)
    await one(0)
    cpu, wall, client = cpu_seconds(pid), time.perf_counter(), sum(os.times()[:2])
    await asyncio.gather(*(one(s % (len(queries) - per_search))
                           for s in range(0, total, per_search)))
    used, client = cpu_seconds(pid) - cpu, sum(os.times()[:2]) - client
    return {"case": label, "server_cpu_ms_per_query": round(1000 * used / total, 3),
            "client_cpu_ms_per_query": round(1000 * client / total, 3),
            "wall_ms_per_query": round(1000 * (time.perf_counter() - wall) / total, 3)}


def start(variant: str, root: Path) -> tuple[milvus_server.LocalMilvusServer, MilvusVectors]:
    """A fresh server with ``variant``'s settings (the environment only for its start)."""
    edits, env = VARIANTS[variant]
    plain = milvus_server.render_config

    def render(directory: Path) -> str:
        text = plain(directory)
        for old, new in edits:
            if text.count(old) != 1:
                raise RuntimeError(f"milvus.yaml has no single {old!r}")
            text = text.replace(old, new)
        return text
    saved = dict(os.environ)
    os.environ.update(env)
    milvus_server.render_config = render
    try:
        server = milvus_server.LocalMilvusServer(root)
        return server, MilvusVectors(server.start(), timeout=10)
    finally:
        milvus_server.render_config = plain
        os.environ.clear()
        os.environ.update(saved)


def run_variant(variant: str, args: argparse.Namespace, cases: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server, store = start(variant, Path(tmp) / "milvus")
        try:
            items, queries = clustered(args.n, args.dim, 50, 1, 2000)
            live = publish(store, "bench", "1", items, progress=False)

            async def run() -> None:
                for case in cases:
                    ticks = cpu_ticks()
                    row = await measure(store, live, queries, server.proc.pid, case,
                                        args.total, args.concurrency)
                    print(json.dumps({"variant": variant, **row,
                                      "steal_pct": steal_percent(ticks, cpu_ticks())}),
                          flush=True)
                await store.aclose()
            asyncio.run(run())
        finally:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3883)
    parser.add_argument("--dim", type=int, default=641)
    parser.add_argument("--total", type=int, default=1600)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--variants", default="defaults",
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--cases", default=",".join(str(i) for i in range(len(CASES))),
                        help="comma-separated indices into CASES")
    args = parser.parse_args()
    header("Milvus server CPU per query, batched and filtered")
    cases = [CASES[int(i)] for i in args.cases.split(",")]
    for variant in args.variants.split(","):
        run_variant(variant, args, cases)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
