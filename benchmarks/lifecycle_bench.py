"""The living recommender on ml-1m, timed: new movies, a snapshot, a whole retrain.

Starts the stack as ``benchmarks/serving_bench.py`` does (real PostgreSQL, Redis and
Milvus, the four services) on a copy of ``--artifacts`` as the serving root, then:

1. **new movies**: ``--movies`` (20) movies are added one by one through the gateway's
   ``UpsertMovies`` (each of a genre no other movie has, ``unknown``); for each, the
   seconds from the call until a genre-filtered ``Recommend`` (profile and liked ids) and
   ``SimilarMovies`` return it (polled every 50 ms); p50 / p99 / max (target p99 <= 5 s);
2. **online ratings**: ``--online`` (20,000) ratings of ml-1m's recbole validation part
   (never trained on by the serving models) recorded through ``RecordRating``, now: the
   newest ratings a retrain is judged on;
3. **snapshot**: ``movierec snapshot`` of the catalog (the ml-1m training ratings, the
   added movies and the online ratings), seconds and counts;
4. **retrain**: ``movierec retrain`` (subprocess, ``--threads``) against these stores: the
   seconds of each step (snapshot, train, validate, promote) and its verdict.

    MOVIELENS_DIR=../shared/data/ml-1m MOVIEREC_ARTIFACTS=.movierec/eval/artifacts-recbole \\
        .venv/bin/python benchmarks/lifecycle_bench.py [--movies 20] [--no-retrain]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import Processes, command_line, header  # noqa: E402
from movierec.common.v1 import common_pb2  # noqa: E402
from movierec.data.source import load_dataset  # noqa: E402
from movierec.data.splits import make_split  # noqa: E402
from movierec.gateway.v1 import gateway_pb2 as pb  # noqa: E402
from movierec.gateway.v1 import gateway_pb2_grpc  # noqa: E402
from movierec.models import registry  # noqa: E402
from movierec.models.artifact import latest, write_pointer  # noqa: E402
from movierec.stack.prepare import load_catalog, load_vectors  # noqa: E402
from movierec.stack.stores import LocalStores  # noqa: E402

PROFILE = common_pb2.Profile(age=30, gender="F", occupation=4)


async def time_new_movies(gateway: str, count: int) -> list[float]:
    """Seconds from each UpsertMovies call until every query returns the movie."""
    out = []
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for n in range(count):
            movie = common_pb2.Movie(title=f"Lantern Bay Chronicles {n}", year=1990 + n % 10,
                                     genres=["unknown", "Drama" if n % 2 else "Comedy"])
            began = time.perf_counter()
            added = (await stub.UpsertMovies(pb.UpsertMoviesRequest(movies=[movie]),
                                             timeout=10)).movies[0].movie_id
            queries = [stub.Recommend(pb.RecommendRequest(profile=PROFILE, genres=["unknown"],
                                                          top_k=100), timeout=5),
                       stub.Recommend(pb.RecommendRequest(
                           liked=common_pb2.LikedMovies(movie_ids=[1, 260, 608]),
                           genres=["unknown"], top_k=100), timeout=5)]
            while True:
                replies = await asyncio.gather(*queries)
                similar = await stub.SimilarMovies(pb.SimilarMoviesRequest(
                    movie_id=added, top_k=5), timeout=5)
                if all(added in {i.movie_id for i in r.items} for r in replies) and \
                        len(similar.items) == 5:
                    break
                await asyncio.sleep(0.05)
                queries = [stub.Recommend(q, timeout=5) for q in (
                    pb.RecommendRequest(profile=PROFILE, genres=["unknown"], top_k=100),
                    pb.RecommendRequest(liked=common_pb2.LikedMovies(movie_ids=[1, 260, 608]),
                                        genres=["unknown"], top_k=100))]
            out.append(time.perf_counter() - began)
    return out


async def record_online(gateway: str, ratings: list[tuple[int, int, int]],
                        in_flight: int = 8) -> float:
    """RecordRating for each (user, movie, stars), ``in_flight`` at a time; seconds."""
    began, queue = time.perf_counter(), list(ratings)
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def worker() -> None:
            while queue:
                user, movie, stars = queue.pop()
                await stub.RecordRating(pb.RecordRatingRequest(
                    user_id=user, movie_id=movie, rating=stars), timeout=10)
        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - began


def online_ratings(count: int) -> list[tuple[int, int, int]]:
    """``count`` ratings of ml-1m's recbole validation part: what the serving models never
    trained on, recorded now as users' new ratings."""
    data = load_dataset("ml-1m")
    valid = make_split(data, "recbole_811").valid.sample(n=count, random_state=0)
    return list(zip(valid["user_id"].astype(int), valid["movie_id"].astype(int),
                    valid["rating"].astype(int), strict=True))


def retrain(env: dict[str, str], threads: int) -> dict:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "movierec.cli", "retrain", "--threads",
                           str(threads)], env=env, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    return {"exit_code": done.returncode, "wall_seconds": round(time.perf_counter() - began, 1),
            "output": lines[-12:], "stderr": done.stderr.strip().splitlines()[-5:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-retrain", action="store_true")
    parser.add_argument("--online", type=int, default=20_000,
                        help="ratings recorded through the gateway before the retrain (the "
                             "newest, unseen ratings the challenger is judged on)")
    parser.add_argument("--artifacts", type=Path,
                        default=Path(os.environ.get("MOVIEREC_ARTIFACTS", "artifacts")))
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    header("lifecycle on ml-1m")
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "serving"
        for model in registry.NAMES:
            source = latest(model, args.artifacts)
            shutil.copytree(source, root / model / source.name)
            write_pointer(root / model / "LATEST", source.name)
        stores = LocalStores(root=Path(tmp) / "stores", durable=False, environ={})
        addresses = stores.start()
        try:
            os.environ["MOVIEREC_ARTIFACTS"] = str(root)
            load_catalog(addresses["DATABASE_URL"], "ml-1m")
            load_vectors(addresses["MILVUS_URI"], "ml-1m")
            env = {**addresses, "MOVIEREC_LOG_LEVEL": "WARNING", "MOVIEREC_ARTIFACTS": str(root),
                   "MOVIEREC_HOME": str(Path(tmp) / "home")}
            with Processes(env, Path(tmp) / "logs") as procs:
                for name in ("catalog", "retriever", "embedder", "gateway"):
                    procs.start(name)
                seconds = asyncio.run(time_new_movies(procs.env["GATEWAY_ADDR"], args.movies))
                if args.online:
                    took = asyncio.run(record_online(procs.env["GATEWAY_ADDR"],
                                                     online_ratings(args.online)))
                    result["online_ratings"] = {"count": args.online, "seconds": round(took, 1)}
            result["new_movie_seconds"] = {
                "count": len(seconds), "p50": round(float(np.percentile(seconds, 50)), 3),
                "p99": round(float(np.percentile(seconds, 99)), 3),
                "max": round(max(seconds), 3)}
            print(json.dumps(result), flush=True)
            began = time.perf_counter()
            snap = subprocess.run([sys.executable, "-m", "movierec.cli", "snapshot"],
                                  env={**os.environ, **env}, capture_output=True, text=True)
            result["snapshot"] = {"seconds": round(time.perf_counter() - began, 1),
                                  "output": snap.stdout.strip()}
            print(json.dumps(result["snapshot"]), flush=True)
            if not args.no_retrain:
                result["retrain"] = retrain({**os.environ, **env}, args.threads)
                print(json.dumps(result["retrain"], indent=1), flush=True)
        finally:
            stores.stop()
    if args.json_out:
        args.json_out.write_text(json.dumps({"command": command_line(), **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
