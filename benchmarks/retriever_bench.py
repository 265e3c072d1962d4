"""Retriever benchmark: Search through gRPC against the physical floor, and ANN recall at 1M.

In one run: numpy brute-force inner product over the same vectors (the floor), a
bare gRPC echo round trip (the cost of one Python gRPC hop), and the retriever's
Search p50/p99 and requests/s at MovieLens size (the exported model vectors when
artifacts exist, else synthetic), reported as a ratio to (floor + echo). Then 1M
clustered synthetic vectors behind an IVF_FLAT index: recall@10 against exact search
and Search latency.

    .venv/bin/python benchmarks/retriever_bench.py [--large 1000000] [--skip-large]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import Processes, header, load, percentiles, timed  # noqa: E402
from movierec.data.source import load_dataset  # noqa: E402
from movierec.errors import DataError  # noqa: E402
from movierec.models.artifact import latest, normalize  # noqa: E402
from movierec.retriever.v1 import retriever_pb2, retriever_pb2_grpc  # noqa: E402
from movierec.services.retriever.loader import ItemBatch, items_from_artifact, publish  # noqa: E402
from movierec.services.retriever.milvus import MilvusVectors  # noqa: E402
from movierec.stack.local_milvus import LocalMilvus  # noqa: E402

SEARCH = "movierec.retriever.v1.Retriever.Search"


def movielens_items() -> tuple[str, ItemBatch]:
    try:
        path = latest("fusion")
        return f"fusion artifact {path.name}", items_from_artifact(path, None, None)
    except DataError:
        data = load_dataset("ml-1m")
        return "synthetic (no artifact)", clustered(len(data.movies), 64, 50, 0)


def clustered(n: int, dim: int, clusters: int, seed: int) -> ItemBatch:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vectors = normalize(centres[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, dim)))
    return ItemBatch(np.arange(1, n + 1), vectors, np.full(n, 1990, np.int32), [[]] * n)


def floor(vectors: np.ndarray, queries: np.ndarray) -> dict:
    def one(q=queries[0]):
        scores = vectors @ q
        top = np.argpartition(-scores, 10)[:10]
        return top[np.argsort(-scores[top])]
    return percentiles(timed(one, 500))


def exact_top(items: ItemBatch, query: np.ndarray, k: int = 10) -> set[int]:
    return set(items.ids[np.argsort(-(items.vectors @ query))[:k]].tolist())


def measure(procs: Processes, model: str, items: ItemBatch, total: int) -> dict:
    rng = np.random.default_rng(1)
    queries = normalize(items.vectors[rng.integers(0, len(items.ids), 200)]
                        + 0.1 * rng.normal(size=(200, items.vectors.shape[1])))
    data = [{"model": model, "vector": q.tolist(), "topK": 10} for q in queries]
    host = procs.env["RETRIEVER_ADDR"]
    single = load(SEARCH, host, data, total, 1)
    busy = load(SEARCH, host, data, total, 8)
    return {"vectors": len(items.ids), "dim": int(items.vectors.shape[1]),
            "floor": floor(items.vectors, queries), "search_c1": single, "search_c8": busy,
            "queries": queries}


def recall(host: str, model: str, items: ItemBatch, queries: np.ndarray) -> float:
    """Mean recall@10 of the service's answers against exact numpy search."""
    async def ask() -> list:
        async with grpc.aio.insecure_channel(host) as channel:
            stub = retriever_pb2_grpc.RetrieverStub(channel)
            return [await stub.Search(retriever_pb2.SearchRequest(
                model=model, vector=q.tolist(), top_k=10), timeout=60) for q in queries]
    replies = asyncio.run(ask())
    found = [len({h.movie_id for h in r.hits} & exact_top(items, q)) / 10
             for r, q in zip(replies, queries, strict=True)]
    return float(np.mean(found))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=3000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    header("retriever benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        milvus = LocalMilvus(Path(tmp) / "milvus")
        uri = milvus.start()
        try:
            with Processes({"MILVUS_URI": uri, "RETRIEVER_CALL_TIMEOUT": "5"},
                           Path(tmp) / "logs") as procs:
                echo = load("movierec.echo.v1.Echo.Echo", procs.echo(), {"payload": "eA=="},
                            args.total, 1)
                print(json.dumps({"echo_c1": echo}))
                source, items = movielens_items()
                publish(MilvusVectors(uri, timeout=60), "small", "v1", items, drain_seconds=0,
                        progress=False)
                procs.start("retriever")
                host = procs.env["RETRIEVER_ADDR"]
                report(measure(procs, "small", items, args.total), echo, source, host, "small",
                       items)
                if not args.skip_large:
                    big = clustered(args.large, 64, 2000, 3)
                    start = time.perf_counter()
                    publish(MilvusVectors(uri, timeout=600), "large", "v1", big,
                            drain_seconds=0, progress=False)
                    print(json.dumps({"large_load_s": round(time.perf_counter() - start, 1)}))
                    report(measure(procs, "large", big, args.total // 3), echo,
                           "clustered synthetic", host, "large", big)
        finally:
            milvus.stop()
    return 0


def report(result: dict, echo: dict, source: str, host: str, model: str,
           items: ItemBatch) -> None:
    queries = result.pop("queries")
    base_p50 = result["floor"]["p50_ms"] + echo["p50_ms"]
    base_p99 = result["floor"]["p99_ms"] + echo["p99_ms"]
    result.update(source=source,
                  ratio_p50=round(result["search_c1"]["p50_ms"] / base_p50, 2),
                  ratio_p99=round(result["search_c1"]["p99_ms"] / base_p99, 2),
                  recall_at_10=round(recall(host, model, items, queries[:100]), 4))
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
