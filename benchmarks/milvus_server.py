"""The local Milvus server: start/stop times, and keepalive under a long load run.

``lifecycle``: a Milvus 2.3.5 server started the first time (binary unpacked into a fresh
``MOVIEREC_HOME``), on fresh data directories, and restarted on existing data; stop times;
idle CPU and memory. ``keepalive``: ``--minutes`` of cycles (``--busy`` seconds of Search at
8 in flight, then ``--idle`` seconds of nothing, the pattern that makes a server count
client pings "without data") against a retriever process over a local Milvus (``--milvus
lite|server``), then the GOAWAY ("too_many_pings") lines in the retriever's log are
counted. ``--client pymilvus-defaults`` runs the same cycles with a bare pymilvus client
and its default keepalive (a ping every 10 s, even when idle) instead, for comparison.

    .venv/bin/python benchmarks/milvus_server.py lifecycle
    .venv/bin/python benchmarks/milvus_server.py keepalive --milvus lite --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import Processes, cpu_seconds, header  # noqa: E402
from benchmarks.retriever_bench import clustered, milvus_memory  # noqa: E402
from movierec import loadtest  # noqa: E402
from movierec.services.retriever.loader import publish  # noqa: E402
from movierec.services.retriever.milvus import KEEPALIVE, MilvusVectors  # noqa: E402
from movierec.stack.local_milvus import LocalMilvus  # noqa: E402
from movierec.stack.local_milvus_server import LocalMilvusServer  # noqa: E402

SEARCH = "movierec.retriever.v1.Retriever.Search"
GOAWAY = ("too_many_pings", "GOAWAY")


def timed_start(root: Path) -> tuple[float, float]:
    server = LocalMilvusServer(root)
    start = time.perf_counter()
    server.start()
    up = time.perf_counter() - start
    start = time.perf_counter()
    server.stop()
    return round(up, 1), round(time.perf_counter() - start, 2)


def lifecycle() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MOVIEREC_HOME"] = str(Path(tmp) / "home")  # nothing unpacked yet
        rows = [("first start (unpacks the binary), fresh data", timed_start(Path(tmp) / "a"))]
        rows += [("fresh data", timed_start(Path(tmp) / f"b{i}")) for i in range(3)]
        rows += [("restart on existing data", timed_start(Path(tmp) / "a")) for _ in range(3)]
        for what, (up, down) in rows:
            print(json.dumps({"case": what, "start_s": up, "stop_s": down}))
        server = LocalMilvusServer(Path(tmp) / "a")
        server.start()
        time.sleep(10)
        milvus = int(Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
                     .read_text().split()[0])
        before = cpu_seconds(milvus)
        time.sleep(30)
        print(json.dumps({"idle_cpu_share_of_one_core": round((cpu_seconds(milvus) - before)
                                                              / 30, 3),
                          "memory_mb": milvus_memory(server)}))
        server.stop()


def cycles(minutes: float, busy: float, idle: float, burst) -> dict:
    """Run ``burst(seconds)`` then sleep ``idle`` until ``minutes`` have passed."""
    totals = {"requests": 0, "ok": 0}
    end = time.monotonic() + minutes * 60
    while time.monotonic() < end:
        requests, ok = burst(min(busy, max(0.0, end - time.monotonic())))
        totals["requests"] += requests
        totals["ok"] += ok
        time.sleep(max(0.0, min(idle, end - time.monotonic())))
    return totals


def through_retriever(procs: Processes, args: argparse.Namespace, queries) -> dict:
    host = procs.start("retriever")
    data = [{"model": "ka", "vector": q.tolist(), "topK": 10} for q in queries]

    failures: Counter[str] = Counter()

    def burst(seconds: float) -> tuple[int, int]:
        result = asyncio.run(loadtest.run(
            {"call": SEARCH, "host": host, "data": data, "concurrency": 8,
             "total": loadtest.MAX_TOTAL, "duration": f"{seconds}s", "timeout": "5s"}))
        failures.update(result.errors)
        return sum(result.codes.values()), result.codes["OK"]
    totals = cycles(args.minutes, args.busy, args.idle, burst)
    log = (procs.log_dir / "retriever.log").read_text(errors="replace")
    return {**totals, "failures": dict(failures), "client_keepalive": KEEPALIVE,
            "goaway_lines": sum(line.count("too_many_pings") > 0 for line in log.splitlines())}


def direct(uri: str, args: argparse.Namespace, queries) -> None:
    """The child of ``--client pymilvus-defaults``: pymilvus as it comes, 8 threads."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=5)
    live = MilvusVectors(uri).resolve("ka").collection

    def burst(seconds: float) -> tuple[int, int]:
        def worker(_: int) -> tuple[int, int]:
            done = ok = 0
            stop = time.monotonic() + seconds
            while time.monotonic() < stop:
                done += 1
                try:
                    client.search(live, [queries[done % len(queries)].tolist()], limit=10)
                    ok += 1
                except Exception:  # noqa: BLE001 - counted, not raised
                    pass
            return done, ok
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(worker, range(8)))
        return sum(r[0] for r in results), sum(r[1] for r in results)
    print(json.dumps(cycles(args.minutes, args.busy, args.idle, burst)), flush=True)


def with_pymilvus_defaults(uri: str, log: Path) -> dict:
    argv = [sys.executable, __file__, "keepalive", "--direct", uri, *sys.argv[2:]]
    with log.open("wb") as out:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=out, check=True,
                              env={**os.environ, "GRPC_VERBOSITY": "ERROR"})
    text = log.read_text(errors="replace")
    return {**json.loads(done.stdout.decode().splitlines()[-1]), "client_keepalive":
            "pymilvus defaults (10 s, without calls too)",
            "goaway_lines": sum("too_many_pings" in line for line in text.splitlines())}


def keepalive(args: argparse.Namespace) -> None:
    _, queries = clustered(10, 64, 50, 0, 200)
    if args.direct:
        direct(args.direct, args, queries)
        return
    with tempfile.TemporaryDirectory() as tmp:
        milvus = (LocalMilvusServer if args.milvus == "server" else LocalMilvus)(
            Path(tmp) / "milvus")
        uri = milvus.start()
        try:
            items, _ = clustered(3883, 64, 50, 0)
            publish(MilvusVectors(uri, timeout=60), "ka", "v1", items, drain_seconds=0,
                    progress=False)
            with Processes({"MILVUS_URI": uri, "GRPC_VERBOSITY": "ERROR"},
                           Path(tmp) / "logs") as procs:
                if args.client == "retriever":
                    result = through_retriever(procs, args, queries)
                else:
                    result = with_pymilvus_defaults(uri, Path(tmp) / "direct.log")
            print(json.dumps({"milvus": args.milvus, "client": args.client,
                              "minutes": args.minutes, "busy_s": args.busy,
                              "idle_s": args.idle, **result}))
        finally:
            milvus.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("lifecycle")
    run = sub.add_parser("keepalive")
    run.add_argument("--milvus", choices=("lite", "server"), default="lite")
    run.add_argument("--client", choices=("retriever", "pymilvus-defaults"),
                     default="retriever")
    run.add_argument("--minutes", type=float, default=10.0)
    run.add_argument("--busy", type=float, default=20.0)
    run.add_argument("--idle", type=float, default=40.0)
    run.add_argument("--direct", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.direct:
        header(f"local Milvus server: {args.command}")
    if args.command == "lifecycle":
        lifecycle()
    else:
        keepalive(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
