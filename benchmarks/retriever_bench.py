"""Retriever benchmark: Search through gRPC against the physical floor, at MovieLens size
and at 1M vectors on a Milvus server (HNSW).

In one run, against a local Milvus (``--milvus server``, the default: Milvus 2.3.5 with
HNSW; ``lite``: milvus-lite, FLAT): numpy brute-force inner product over the same vectors
(the floor), a bare gRPC echo round trip (one Python gRPC hop), and the retriever's Search
p50/p99 (1 in flight) and requests/s (8 in flight) at MovieLens size (the exported fusion
vectors when artifacts exist, else clustered synthetic). Then ``--large`` clustered
synthetic vectors (2,000 Gaussian clusters, not isotropic noise): the load's step times and
Milvus' memory, HNSW ``ef`` tuned on validation queries (the smallest with recall@10 >= the
target), then recall@10, Search p50/p99 and requests/s on other (test) queries through a
retriever serving that ``ef``, beside numpy brute force on the same data (one query, and
8 at a time as one matrix product).

    .venv/bin/python benchmarks/retriever_bench.py [--milvus server] [--large 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from pymilvus import MilvusClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import Processes, header, load, percentiles, timed  # noqa: E402
from movierec.data.source import load_dataset  # noqa: E402
from movierec.errors import DataError  # noqa: E402
from movierec.models.artifact import latest, normalize  # noqa: E402
from movierec.retriever.v1 import retriever_pb2, retriever_pb2_grpc  # noqa: E402
from movierec.services.retriever.loader import ItemBatch, items_from_artifact, publish  # noqa: E402
from movierec.services.retriever.milvus import MilvusVectors  # noqa: E402
from movierec.stack.local_milvus import LocalMilvus  # noqa: E402
from movierec.stack.local_milvus_server import LocalMilvusServer  # noqa: E402
from movierec.stack.process import stop_process  # noqa: E402

SEARCH = "movierec.retriever.v1.Retriever.Search"
EFS = (16, 32, 64, 128, 256, 512)


def movielens_items() -> tuple[str, ItemBatch]:
    try:
        path = latest("fusion")
        return f"fusion artifact {path.name}", items_from_artifact(path, None, None)
    except DataError:
        data = load_dataset("ml-1m")
        return "synthetic (no artifact)", clustered(len(data.movies), 64, 50, 0)[0]


def clustered(n: int, dim: int, clusters: int, seed: int,
              queries: int = 0) -> tuple[ItemBatch, np.ndarray]:
    """``n`` vectors around ``clusters`` random centres, and ``queries`` fresh points drawn
    the same way (not copies of stored vectors)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))

    def draw(count: int) -> np.ndarray:
        return normalize(centres[rng.integers(0, clusters, count)]
                         + 0.6 * rng.normal(size=(count, dim)))
    vectors = draw(n)
    return (ItemBatch(np.arange(1, n + 1), vectors, np.full(n, 1990, np.int32), [[]] * n),
            draw(queries))


def floor(vectors: np.ndarray, queries: np.ndarray, batch: int = 1,
          repeats: int = 300) -> dict:
    """numpy brute force, top 10: one query's latency, or with ``batch`` queries in flight
    (one matrix product for all of them, numpy's way to serve several) queries/s."""
    def search(rows: np.ndarray) -> np.ndarray:
        scores = vectors @ rows.T
        top = np.argpartition(-scores, 10, axis=0)[:10]
        return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 0), 0), 0)
    if batch == 1:
        return percentiles(timed(lambda: search(queries[:1]), repeats))
    groups = [queries[(i * batch) % len(queries):][:batch] for i in range(repeats // batch)]
    start = time.perf_counter()
    for rows in groups:
        search(rows)
    return {"in_flight": batch, "qps": round(len(groups) * batch / (time.perf_counter() - start),
                                             1)}


def exact_top(items: ItemBatch, queries: np.ndarray, k: int = 10) -> list[set[int]]:
    """The exact top ``k`` ids of every query (numpy, 50 queries at a time)."""
    out = []
    for start in range(0, len(queries), 50):
        scores = items.vectors @ queries[start:start + 50].T
        top = np.argpartition(-scores, k, axis=0)[:k].T
        out += [set(items.ids[row].tolist()) for row in top]
    return out


def recall_through(host: str, model: str, items: ItemBatch, queries: np.ndarray) -> float:
    """Mean recall@10 of the retriever service's answers against exact search."""
    async def ask() -> list:
        async with grpc.aio.insecure_channel(host) as channel:
            stub = retriever_pb2_grpc.RetrieverStub(channel)
            return [await stub.Search(retriever_pb2.SearchRequest(
                model=model, vector=q.tolist(), top_k=10), timeout=60) for q in queries]
    replies = asyncio.run(ask())
    found = [len({h.movie_id for h in r.hits} & truth) / 10
             for r, truth in zip(replies, exact_top(items, queries), strict=True)]
    return round(float(np.mean(found)), 4)


def serve_search(procs: Processes, model: str, queries: np.ndarray, total: int) -> dict:
    data = [{"model": model, "vector": q.tolist(), "topK": 10} for q in queries]
    host = procs.env["RETRIEVER_ADDR"]
    return {"search_c1": load(SEARCH, host, data, total, 1),
            "search_c8": load(SEARCH, host, data, total, 8)}


def milvus_memory(milvus) -> dict:
    """VmRSS / VmHWM (MB) of the Milvus process (the supervisor's child on a server)."""
    pid = milvus.proc.pid
    if isinstance(milvus, LocalMilvusServer):
        pid = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return {k: round(int(status[k].split()[0]) / 1024) for k in ("VmRSS", "VmHWM")}


def tune_ef(uri: str, collection: str, items: ItemBatch, queries: np.ndarray,
            target: float) -> tuple[int, list[dict]]:
    """The smallest ef whose recall@10 on ``queries`` reaches ``target`` (searched
    directly with pymilvus), and every ef's recall and latency."""
    client, truth = MilvusClient(uri=uri, timeout=60), exact_top(items, queries)
    rows = []
    for ef in EFS:
        params = {"metric_type": "IP", "params": {"ef": ef}}
        found, seconds = [], []
        for q in queries:
            start = time.perf_counter()
            hits = client.search(collection, [q.tolist()], limit=10, search_params=params)[0]
            seconds.append(time.perf_counter() - start)
            found.append({int(h["id"]) for h in hits})
        recall = float(np.mean([len(f & t) / 10 for f, t in zip(found, truth, strict=True)]))
        rows.append({"ef": ef, "recall_at_10": round(recall, 4), **percentiles(seconds)})
        if recall >= target:
            return ef, rows
    return EFS[-1], rows


def large(procs: Processes, milvus, uri: str, args: argparse.Namespace) -> dict:
    big, queries = clustered(args.large, 64, 2000, 3, 2 * args.queries)
    tune, test = queries[:args.queries], queries[args.queries:]
    timings: dict[str, float] = {}
    start = time.perf_counter()
    live = publish(MilvusVectors(uri, timeout=600), "large", "v1", big, drain_seconds=0,
                   progress=False, timings=timings)
    result = {"vectors": args.large, "dim": 64, "index": live.index_type,
              "load_total_s": round(time.perf_counter() - start, 1), **timings,
              "milvus_mb": milvus_memory(milvus)}
    print(json.dumps(result), flush=True)
    ef, rows = tune_ef(uri, live.collection, big, tune, args.target)
    print(json.dumps({"ef_tuning_on_validation_queries": rows}), flush=True)
    if "retriever" in procs.procs:  # restarted to serve the tuned ef
        stop_process(procs.procs.pop("retriever"))
    procs.env["RETRIEVER_HNSW_EF"] = str(ef)
    procs.start("retriever")
    result.update(ef=ef, floor_c1=floor(big.vectors, test),
                  floor_c8=floor(big.vectors, test, batch=8),
                  **serve_search(procs, "large", test, args.total // 3),
                  recall_at_10=recall_through(procs.env["RETRIEVER_ADDR"], "large", big, test),
                  milvus_mb_after_searches=milvus_memory(milvus))
    return result


def small(procs: Processes, uri: str, echo: dict, args: argparse.Namespace) -> dict:
    source, items = movielens_items()
    publish(MilvusVectors(uri, timeout=60), "small", "v1", items, drain_seconds=0,
            progress=False)
    procs.start("retriever")
    rng = np.random.default_rng(1)
    queries = normalize(items.vectors[rng.integers(0, len(items.ids), 200)]
                        + 0.1 * rng.normal(size=(200, items.vectors.shape[1])))
    result = {"source": source, "vectors": len(items.ids), "dim": int(items.vectors.shape[1]),
              "floor": floor(items.vectors, queries),
              **serve_search(procs, "small", queries, args.total)}
    base = {p: result["floor"][p] + echo[p] for p in ("p50_ms", "p99_ms")}
    result.update(ratio_p50=round(result["search_c1"]["p50_ms"] / base["p50_ms"], 2),
                  ratio_p99=round(result["search_c1"]["p99_ms"] / base["p99_ms"], 2),
                  recall_at_10=recall_through(procs.env["RETRIEVER_ADDR"], "small", items,
                                              queries[:100]))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--milvus", choices=("server", "lite"), default="server")
    parser.add_argument("--total", type=int, default=3000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200, help="validation and test each")
    parser.add_argument("--target", type=float, default=0.95, help="recall@10 to tune ef for")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    header(f"retriever benchmark (Milvus {args.milvus})")
    with tempfile.TemporaryDirectory() as tmp:
        milvus = (LocalMilvusServer if args.milvus == "server" else LocalMilvus)(
            Path(tmp) / "milvus")
        uri = milvus.start()
        try:
            with Processes({"MILVUS_URI": uri, "RETRIEVER_CALL_TIMEOUT": "5"},
                           Path(tmp) / "logs") as procs:
                echo = load("movierec.echo.v1.Echo.Echo", procs.echo(), {"payload": "eA=="},
                            args.total, 1)
                print(json.dumps({"echo_c1": echo}), flush=True)
                if not args.skip_small:
                    print(json.dumps({"small": small(procs, uri, echo, args)}), flush=True)
                if not args.skip_large:
                    print(json.dumps({"large": large(procs, milvus, uri, args)}), flush=True)
        finally:
            milvus.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
