"""Catalog benchmark: loader time on ml-1m, then GetMovies(10 ids) and SearchMovies
through gRPC on loopback at several concurrencies (p50/p99, requests/s).

    .venv/bin/python benchmarks/catalog_bench.py [--dataset ml-1m] [--total 2000]
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
from benchmarks.common import Processes, header, load  # noqa: E402
from movierec.data.source import load_dataset  # noqa: E402
from movierec.services.catalog import loader  # noqa: E402
from movierec.stack.local_postgres import LocalPostgres  # noqa: E402


def loader_times(url: str, dataset: str) -> dict:
    data = load_dataset(dataset)
    out = {}
    for label, ratings in (("all ratings", data.ratings),
                           ("recbole_811 train", loader.select_ratings(data))):
        start = time.perf_counter()
        counts = asyncio.run(loader.load(url, data, ratings, progress=False))
        first = time.perf_counter() - start
        start = time.perf_counter()
        asyncio.run(loader.load(url, data, ratings, progress=False))
        out[label] = {"first_s": round(first, 1),
                      "again_s": round(time.perf_counter() - start, 1), **counts}
        if label == "all ratings":
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("TRUNCATE ratings")
    return out


def requests(dataset: str) -> tuple[list, list]:
    data = load_dataset(dataset)
    rng = np.random.default_rng(0)
    ids = data.movies.movie_id.to_numpy()
    movies = [{"movieIds": [int(i) for i in rng.choice(ids, 10, replace=False)]}
              for _ in range(200)]
    words = [t.split()[0] for t in data.movies.title.sample(200, random_state=0)]
    return movies, [{"query": w, "limit": 10} for w in words]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--total", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,8,32")
    args = parser.parse_args()
    header("catalog benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        pg = LocalPostgres(Path(tmp) / "pg", durable=True)
        url = pg.start()
        try:
            print(json.dumps({"loader": loader_times(url, args.dataset)}))
            get, search = requests(args.dataset)
            with Processes({"DATABASE_URL": url}, Path(tmp) / "logs") as procs:
                host = procs.start("catalog")
                for name, call, data in (("GetMovies(10 ids)", "GetMovies", get),
                                         ("SearchMovies", "SearchMovies", search)):
                    for c in map(int, args.concurrency.split(",")):
                        row = load(f"movierec.catalog.v1.Catalog.{call}", host, data,
                                   args.total, c)
                        print(json.dumps({"rpc": name, **row}))
        finally:
            pg.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
