"""Milvus server CPU per query: one query vector per search against several, and an
exclusion filter against asking for more hits and dropping them (the retriever's
batching, :mod:`movierec.services.retriever.batcher`).

A Milvus 2.3.5 server on a fresh data directory holds ``--n`` random clustered vectors
of ``--dim`` numbers (the MovieLens catalog's size and PinSage's width by default); the
asyncio client sends searches ``--concurrency`` at a time; the server's CPU seconds
(its whole process tree, /proc) are divided by the number of query vectors.

    .venv/bin/python benchmarks/milvus_batching.py [--n 3883] [--dim 641] [--total 1600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import cpu_seconds, header  # noqa: E402
from benchmarks.retriever_bench import clustered  # noqa: E402
from movierec.services.retriever.loader import publish  # noqa: E402
from movierec.services.retriever.milvus import Filters, MilvusVectors  # noqa: E402
from movierec.stack.local_milvus_server import LocalMilvusServer  # noqa: E402

#: (label, query vectors per search, limit, excluded ids per search)
CASES = [("1 per search, top 30", 1, 30, 0), ("1 per search, top 30, 3 excluded", 1, 30, 3),
         ("1 per search, top 30, 200 excluded", 1, 30, 200),
         ("1 per search, top 230, no filter", 1, 230, 0), ("4 per search, top 30", 4, 30, 0),
         ("8 per search, top 30", 8, 30, 0), ("8 per search, top 60", 8, 60, 0)]


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
    cpu, wall = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(one(s % (len(queries) - per_search))
                           for s in range(0, total, per_search)))
    used = cpu_seconds(pid) - cpu
    return {"case": label, "server_cpu_ms_per_query": round(1000 * used / total, 3),
            "wall_ms_per_query": round(1000 * (time.perf_counter() - wall) / total, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3883)
    parser.add_argument("--dim", type=int, default=641)
    parser.add_argument("--total", type=int, default=1600)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    header("Milvus server CPU per query, batched and filtered")
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalMilvusServer(Path(tmp) / "milvus")
        store = MilvusVectors(server.start(), timeout=10)
        try:
            items, queries = clustered(args.n, args.dim, 50, 1, 2000)
            live = publish(store, "bench", "1", items, progress=False)

            async def run() -> None:
                for case in CASES:
                    print(json.dumps(await measure(store, live, queries, server.proc.pid, case,
                                                   args.total, args.concurrency)), flush=True)
                await store.aclose()
            asyncio.run(run())
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
