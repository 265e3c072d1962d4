"""Benchmark embedded Milvus (milvus-lite) for movierec's vector store.

Measures, for whichever pymilvus / milvus-lite pair is installed in the
interpreter running this script:

* insert time (batches of at most 1000 rows, flush included),
* index build time (create_index + wait until finished + load_collection),
* single-query search latency p50/p99 (top 10, metric IP),
* recall@10 against exact numpy brute force,
* the numpy brute-force latency itself (the floor).

Vectors are L2-normalised float32 Gaussian vectors from a fixed seed; the
queries are drawn from the same distribution (they are not base vectors).
Index types: FLAT, IVF_FLAT (nlist ~ sqrt(n), smallest nprobe reaching
recall@10 >= 0.95) and HNSW (M=16, efConstruction=200, ef=64) when the
installed milvus-lite accepts it.

Access modes:

* ``inproc``: ``MilvusClient("<file>.db")``.  milvus-lite 2.x spawns its C++
  ``milvus`` binary as a child process and talks to it over a Unix socket;
  milvus-lite 3.x runs a pure-Python gRPC server in a thread of this process
  on an ephemeral 127.0.0.1 port.
* ``server``: milvus-lite started as a loopback TCP server and reached with
  ``MilvusClient(uri="http://127.0.0.1:PORT")``.  2.x: ``milvus_lite.server.
  Server(db, address="127.0.0.1:PORT")``; 3.x: ``python -m milvus_lite server
  --data-dir DB --host 127.0.0.1 --port PORT`` in a separate process.

For every mode the script also checks (once, at the first size) whether a
second process can use the same database: over the server URI, and by
opening the ``.db`` path directly (expected to fail: one opener per file).

Usage::

    nice -n 10 python benchmarks/milvus_embedded.py --sizes 4000,100000 \\
        --dim 64 --queries 200 --json /tmp/milvus_bench.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata

import numpy as np
from pymilvus import DataType, MilvusClient

K = 10
SEED = 20240601
BATCH = 1000
RECALL_TARGET = 0.95
HNSW_BUILD = {"M": 16, "efConstruction": 200}
HNSW_SEARCH = {"ef": 64}
HNSW_BUDGET_S = 180.0
PILOT_N = 4000
INDEX_TYPES = ("FLAT", "IVF_FLAT", "HNSW")
CHILD_CODE = r"""
import json, sys
from pymilvus import MilvusClient
uri, coll, db_path = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
try:
    c = MilvusClient(uri=uri)
    out["rows_seen"] = len(c.query(coll, filter="id >= 0", output_fields=["id"]))
    c.insert(coll, [{"id": 999, "vec": [0.125] * int(sys.argv[4])}])
    c.flush(coll)
    out["insert_ok"] = True
except Exception as exc:
    out["uri_error"] = repr(exc)[:200]
try:
    MilvusClient(db_path).list_collections()
    out["open_db_file"] = "opened"
except Exception as exc:
    out["open_db_file"] = "refused: " + repr(exc)[:160]
print(json.dumps(out))
"""


def versions() -> dict:
    """Return the versions of the packages that matter for this benchmark."""
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for pkg in ("pymilvus", "milvus-lite", "setuptools"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def lite_major() -> int:
    """Major version of the installed milvus-lite."""
    return int(metadata.version("milvus-lite").split(".")[0])


def make_data(n: int, dim: int, nq: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, L2-normalised float32 base vectors and query vectors."""
    rng = np.random.default_rng(SEED + n)
    base = rng.standard_normal((n, dim), dtype=np.float32)
    queries = rng.standard_normal((nq, dim), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return base, queries


def topk_numpy(base: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Exact top-K ids by inner product for one query vector."""
    scores = base @ q
    idx = np.argpartition(-scores, K)[:K]
    return idx[np.argsort(-scores[idx])]


def numpy_floor(base: np.ndarray, queries: np.ndarray) -> tuple[list, list]:
    """Ground truth ids plus per-query brute-force latencies in ms."""
    truth, lat = [], []
    for q in queries[:5]:
        topk_numpy(base, q)
    for q in queries:
        t0 = time.perf_counter()
        ids = topk_numpy(base, q)
        lat.append((time.perf_counter() - t0) * 1e3)
        truth.append(ids.tolist())
    return truth, lat


def recall(found: list, truth: list) -> float:
    """Mean recall@K of result id lists against ground-truth id lists."""
    hits = sum(len(set(f[:K]) & set(t[:K])) for f, t in zip(found, truth, strict=True))
    return hits / (K * len(truth))


def pct(lat: list) -> dict:
    """p50 / p99 of a latency list in ms."""
    arr = np.asarray(lat)
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99))}


def free_port() -> int:
    """Ask the kernel for a currently free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc=None, timeout: float = 60.0) -> float:
    """Block until 127.0.0.1:port accepts TCP; return seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return time.perf_counter() - t0
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not ready after {timeout}s")


def start_server(db_path: str, port: int) -> tuple:
    """Start milvus-lite as a loopback TCP server; return (kind, handle)."""
    if lite_major() >= 3:
        cmd = [
            sys.executable,
            "-m",
            "milvus_lite",
            "server",
            "--data-dir",
            db_path,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return "proc", proc
    from milvus_lite.server import Server

    srv = Server(db_path, address=f"127.0.0.1:{port}")
    if not srv.init() or not srv.start():
        raise RuntimeError("milvus_lite.server.Server failed to start")
    return "lite2", srv


def stop_server(kind: str, handle) -> dict:
    """Stop a server from start_server; report how it ended."""
    t0 = time.perf_counter()
    if kind == "proc":
        handle.send_signal(signal.SIGINT)  # run_server closes the DB
        try:
            handle.wait(timeout=15)
        except subprocess.TimeoutExpired:
            handle.kill()
            handle.wait()
        code = handle.returncode
    else:
        proc = handle._p  # the milvus binary (Popen)
        handle.stop()
        code = proc.returncode if proc is not None else None
    return {"stop_s": round(time.perf_counter() - t0, 3), "exit_code": code}


def open_mode(mode: str, workdir: str, size: int) -> dict:
    """Open a fresh database for (mode, size); return a context dict."""
    db_path = os.path.join(workdir, f"b_{mode}_{size}.db")
    ctx = {"mode": mode, "db": db_path}
    t0 = time.perf_counter()
    if mode == "inproc":
        ctx["client"] = MilvusClient(db_path)
    else:
        port = free_port()
        ctx["server"] = start_server(db_path, port)
        proc = ctx["server"][1]
        ctx["ready_s"] = wait_port(port, proc if ctx["server"][0] == "proc" else proc._p)
        ctx["uri"] = f"http://127.0.0.1:{port}"
        ctx["client"] = MilvusClient(uri=ctx["uri"])
    ctx["open_s"] = time.perf_counter() - t0
    return ctx


def close_mode(ctx: dict) -> dict:
    """Close client and server / embedded instance opened by open_mode."""
    info = {}
    try:
        ctx["client"].close()
    except Exception as exc:  # noqa: BLE001 - report only
        info["close_error"] = repr(exc)[:120]
    if "server" in ctx:
        info.update(stop_server(*ctx["server"]))
    else:
        try:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(ctx["db"])
        except Exception as exc:  # noqa: BLE001 - report only
            info["release_error"] = repr(exc)[:120]
    return info


def create_collection(client: MilvusClient, name: str, dim: int) -> None:
    """Create an int64-pk / float-vector collection without an index."""
    if client.has_collection(name):
        client.drop_collection(name)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
    client.create_collection(name, schema=schema)


def insert_all(client: MilvusClient, name: str, base: np.ndarray) -> float:
    """Insert base vectors in batches of BATCH rows, flush; return seconds."""
    t0 = time.perf_counter()
    for start in range(0, len(base), BATCH):
        chunk = base[start : start + BATCH].tolist()
        rows = [{"id": start + i, "vec": v} for i, v in enumerate(chunk)]
        client.insert(name, rows)
    client.flush(name)
    return time.perf_counter() - t0


def wait_index(client: MilvusClient, name: str, timeout: float = 600) -> None:
    """Poll describe_index until the server reports the build finished."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        desc = client.describe_index(name, "vec_idx") or {}
        if desc.get("state", "Finished") in ("Finished", "", None):
            return
        if desc.get("state") == "Failed":
            raise RuntimeError(f"index build failed: {desc}")
        time.sleep(0.02)
    raise TimeoutError("index build did not finish")


def build_index(client: MilvusClient, name: str, itype: str, params: dict) -> dict:
    """create_index + wait + load_collection; return timings in seconds."""
    idx = client.prepare_index_params()
    # Nested "params": pymilvus 3.0.2 flattens plain params into separate
    # key/value pairs, which milvus-lite 3.2.2 ignores (nlist silently
    # became 128).  The nested form is honoured by 2.5.1 and 3.2.2 alike.
    idx.add_index(
        field_name="vec",
        index_name="vec_idx",
        index_type=itype,
        metric_type="IP",
        params={"params": params} if params else {},
    )
    t0 = time.perf_counter()
    client.create_index(name, idx, sync=False)  # pymilvus polls at 0.5 s
    wait_index(client, name)
    t1 = time.perf_counter()
    client.load_collection(name)
    t2 = time.perf_counter()
    desc = client.describe_index(name, "vec_idx") or {}
    return {
        "create_index_s": t1 - t0,
        "load_s": t2 - t1,
        "build_s": t2 - t0,
        "describe": {k: v for k, v in desc.items() if k != "field_name"},
    }


def search_batch(client, name, queries, params) -> list:
    """Batch search (used for nprobe calibration); returns id lists."""
    res = client.search(
        name,
        data=queries.tolist(),
        limit=K,
        anns_field="vec",
        search_params={"metric_type": "IP", "params": params},
    )
    return [[hit["id"] for hit in hits] for hits in res]


def search_each(client, name, queries, params) -> tuple[list, list]:
    """One search call per query; returns (id lists, latencies in ms)."""
    sp = {"metric_type": "IP", "params": params}
    for q in queries[:5]:
        client.search(name, data=[q.tolist()], limit=K, anns_field="vec", search_params=sp)
    found, lat = [], []
    for q in queries:
        data = [q.tolist()]
        t0 = time.perf_counter()
        res = client.search(name, data=data, limit=K, anns_field="vec", search_params=sp)
        lat.append((time.perf_counter() - t0) * 1e3)
        found.append([hit["id"] for hit in res[0]])
    return found, lat


def calibrate_nprobe(client, name, queries, truth, nlist: int) -> dict:
    """Smallest power-of-two nprobe (<= nlist) reaching RECALL_TARGET."""
    probes = sorted({min(2**i, nlist) for i in range(0, 16)})
    sub = len(queries)
    tried = {}
    for nprobe in probes:
        found = search_batch(client, name, queries[:sub], {"nprobe": nprobe})
        tried[nprobe] = round(recall(found, truth[:sub]), 4)
        if tried[nprobe] >= RECALL_TARGET:
            return {"nprobe": nprobe, "tried": tried, "target_met": True}
    return {"nprobe": nlist, "tried": tried, "target_met": False}


def hnsw_estimate(client, base, known: dict) -> float:
    """Estimated HNSW build seconds for len(base) rows."""
    n = len(base)
    if known:
        n0, t0 = max(known.items())
    else:
        n0 = min(n, PILOT_N)
        create_collection(client, "hnsw_pilot", base.shape[1])
        insert_all(client, "hnsw_pilot", base[:n0])
        t0 = build_index(client, "hnsw_pilot", "HNSW", HNSW_BUILD)["build_s"]
        client.drop_collection("hnsw_pilot")
    # Exponent fitted on this machine: 4k -> 100k took 1.2 s -> 115 s (n^1.4).
    return t0 * (n / n0) ** 1.4


def index_plan(itype: str, n: int) -> tuple[dict, dict]:
    """Build params and initial search params for an index type."""
    if itype == "IVF_FLAT":
        return {"nlist": max(1, int(round(math.sqrt(n))))}, {}
    if itype == "HNSW":
        return dict(HNSW_BUILD), dict(HNSW_SEARCH)
    return {}, {}


def run_index(ctx, itype, base, queries, truth) -> dict:
    """Insert, build, calibrate and time one index type in one collection."""
    client, n = ctx["client"], len(base)
    name = f"bench_{itype.lower()}"
    build_params, sparams = index_plan(itype, n)
    row = {"index": itype, "build_params": build_params}
    create_collection(client, name, base.shape[1])
    row["insert_s"] = insert_all(client, name, base)
    try:
        row.update(build_index(client, name, itype, build_params))
    except Exception as exc:  # noqa: BLE001 - reported
        row["skipped"] = "create_index refused: " + str(exc)[:160]
        client.drop_collection(name)
        return row
    if itype == "IVF_FLAT":
        cal = calibrate_nprobe(client, name, queries, truth, build_params["nlist"])
        sparams = {"nprobe": cal["nprobe"]}
        row["nprobe_calibration"] = cal
    found, lat = search_each(client, name, queries, sparams)
    row.update(pct(lat), search_params=sparams, recall_at_10=recall(found, truth))
    client.drop_collection(name)
    return row


def maybe_run_hnsw(ctx, base, queries, truth, hnsw_known: dict) -> dict:
    """Run HNSW unless unsupported or its estimated build exceeds budget."""
    if ctx.get("hnsw_unsupported"):
        return {"index": "HNSW", "skipped": ctx["hnsw_unsupported"]}
    n = len(base)
    if n > PILOT_N:
        est = hnsw_estimate(ctx["client"], base, hnsw_known)
        if est > HNSW_BUDGET_S:
            return {
                "index": "HNSW",
                "skipped": f"estimated build {est:.0f}s > {HNSW_BUDGET_S:.0f}s budget",
            }
    row = run_index(ctx, "HNSW", base, queries, truth)
    if "skipped" in row:
        ctx["hnsw_unsupported"] = row["skipped"]
    else:
        hnsw_known[n] = row["build_s"]
    return row


def sharing_check(ctx: dict, dim: int) -> dict:
    """Can a second process use this database (via URI / via the file)?"""
    client, coll = ctx["client"], "share_probe"
    create_collection(client, coll, dim)
    client.insert(coll, [{"id": i, "vec": [0.25] * dim} for i in range(10)])
    client.flush(coll)
    uri = ctx.get("uri", "unavailable://in-process-mode")
    cmd = [sys.executable, "-c", CHILD_CODE, uri, coll, ctx["db"], str(dim)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
        lines = out.stdout.strip().splitlines()
        child = json.loads(lines[-1]) if lines else {"stderr": out.stderr[-300:]}
    except subprocess.TimeoutExpired:
        child = {"error": "child timed out after 90s"}
    if "uri" not in ctx:
        child.pop("uri_error", None)
    child["rows_after_child"] = len(client.query(coll, filter="id >= 0", output_fields=["id"]))
    client.drop_collection(coll)
    return child


def run_size(mode, n, args, workdir, state) -> dict:
    """All index types for one (mode, size) on a fresh database."""
    base, queries = make_data(n, args.dim, args.queries)
    truth, np_lat = numpy_floor(base, queries)
    result = {"mode": mode, "size": n, "numpy": pct(np_lat), "indexes": []}
    ctx = open_mode(mode, workdir, n)
    ctx["hnsw_unsupported"] = state.get("hnsw_unsupported")
    result["open_s"] = ctx["open_s"]
    try:
        for itype in args.indexes:
            if itype == "HNSW":
                row = maybe_run_hnsw(ctx, base, queries, truth, state.setdefault(mode, {}))
                state["hnsw_unsupported"] = ctx.get("hnsw_unsupported")
            else:
                row = run_index(ctx, itype, base, queries, truth)
            print_row(mode, n, row)
            result["indexes"].append(row)
        if not state.get(f"shared_{mode}"):
            result["sharing"] = sharing_check(ctx, args.dim)
            state[f"shared_{mode}"] = True
    finally:
        result["close"] = close_mode(ctx)
    return result


def print_row(mode: str, n: int, row: dict) -> None:
    """Print one measurement line as soon as it is available."""
    ver = metadata.version("milvus-lite")
    if "skipped" in row:
        print(f"{ver:8} {mode:7} {n:>7} {row['index']:9} SKIPPED: {row['skipped']}", flush=True)
        return
    print(
        f"{ver:8} {mode:7} {n:>7} {row['index']:9} "
        f"insert {row['insert_s']:7.2f}s build {row['build_s']:7.2f}s "
        f"p50 {row['p50_ms']:7.2f}ms p99 {row['p99_ms']:7.2f}ms "
        f"recall@10 {row['recall_at_10']:.3f} {row['search_params']}",
        flush=True,
    )


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4000,100000", help="comma-separated collection sizes")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--modes", default="inproc,server", help="comma-separated subset of inproc,server"
    )
    ap.add_argument("--indexes", default=",".join(INDEX_TYPES))
    ap.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="write all results as JSON to PATH ('-' = stdout)",
    )
    args = ap.parse_args(argv)
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    args.modes = [m for m in args.modes.split(",") if m]
    args.indexes = [i.upper() for i in args.indexes.split(",") if i]
    return args


def main(argv=None) -> int:
    """Run every (mode, size) combination and report."""
    args = parse_args(argv)
    info = versions()
    info.update(
        cpus=os.cpu_count(), machine=platform.machine(), date=time.strftime("%Y-%m-%dT%H:%M:%S%z")
    )
    print("versions:", json.dumps(info), flush=True)
    workdir = tempfile.mkdtemp(prefix="milvus_bench_")
    state, runs = {}, []
    try:
        for mode in args.modes:
            for n in args.sizes:
                runs.append(run_size(mode, n, args, workdir, state))
                print(
                    f"numpy brute force n={n}: {runs[-1]['numpy']}; "
                    f"sharing: {runs[-1].get('sharing')}; "
                    f"close: {runs[-1]['close']}",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = {"env": info, "args": vars(args), "runs": runs}
    if args.json == "-":
        print(json.dumps(out, indent=1))
    elif args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
