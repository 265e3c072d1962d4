"""A promotion under load: does a new model version go live without a failed request?

Starts the stack as ``benchmarks/serving_bench.py`` does (real PostgreSQL, Redis and
Milvus, the four services as processes) on a copy of ``--artifacts`` as the serving
root, then drives ``Recommend`` with ``--in-flight`` (8) requests in flight for
``--seconds`` (90): profile, liked-ids and user-id requests in turn, with distinct cache
keys (the ghz ``*_miss`` builders), so every one is computed. After ``--promote-at``
seconds, ``movierec retrain``'s promotion step (:func:`movierec.stack.retrain.promote`)
runs for both models with challengers that are copies of the serving artifacts under a
newer version: their vectors are published to Milvus (a new collection, the live
pointer swapped, the previous one kept) and ``LATEST`` moved; the embedder picks the
new version up at its next reload (``EMBEDDER_RELOAD_SECONDS``, 30 by default).

Reported: every answer's status and ``model_version`` over time; the requests that
failed (target 0); answers with a version that is neither the old nor the new one
(impossible by construction: the retriever answers a query from the collection of the
embedder's version or refuses it, FAILED_PRECONDITION; target 0); p99 in the steady
window before the promotion and in the switch-over window (from the promotion until 5 s
after the last old-version answer; target: at most twice the steady p99).

    MOVIELENS_DIR=../shared/data/ml-1m MOVIEREC_ARTIFACTS=.movierec/eval/artifacts-recbole \\
        .venv/bin/python benchmarks/promotion_under_load.py [--seconds 90] [--promote-at 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import json_format

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import Processes, command_line, header  # noqa: E402
from benchmarks.serving_bench import miss_requests  # noqa: E402
from movierec.gateway.v1 import gateway_pb2 as pb  # noqa: E402
from movierec.gateway.v1 import gateway_pb2_grpc  # noqa: E402
from movierec.models import registry  # noqa: E402
from movierec.models.artifact import latest, read_metadata, write_pointer  # noqa: E402
from movierec.services.retriever.milvus import MilvusVectors  # noqa: E402
from movierec.stack.prepare import load_catalog, load_vectors  # noqa: E402
from movierec.stack.retrain import promote  # noqa: E402
from movierec.stack.stores import LocalStores  # noqa: E402


def challengers(root: Path, target: Path) -> dict[str, Path]:
    """Copies of the serving artifacts under a newer version name (same vectors)."""
    found = {}
    for model in registry.NAMES:
        path = latest(model, root)
        version = path.name[:-1] + "9Z"
        copy = target / model / version
        shutil.copytree(path, copy)
        text = (copy / "metadata.json").read_text()
        (copy / "metadata.json").write_text(text.replace(read_metadata(path)["version"],
                                                         version))
        found[model] = copy
    return found


async def drive(host: str, requests: list[pb.RecommendRequest], seconds: float,
                in_flight: int) -> list[tuple[float, float, str, str]]:
    """(start offset s, latency ms, status, model_version) of every request."""
    out, start, index = [], time.perf_counter(), [0]
    async with grpc.aio.insecure_channel(host) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def worker() -> None:
            while time.perf_counter() - start < seconds:
                request = requests[index[0] % len(requests)]
                index[0] += 1
                began = time.perf_counter()
                try:
                    reply = await stub.Recommend(request, timeout=5)
                    status, version = "OK", reply.model_version
                except grpc.aio.AioRpcError as exc:
                    status, version = exc.code().name, ""
                out.append((began - start, 1000 * (time.perf_counter() - began), status,
                            version))
        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return out


def summary(rows, promoted_at: float, old: set[str], new: set[str]) -> dict:
    latencies = np.asarray([r[1] for r in rows])
    started = np.asarray([r[0] for r in rows])
    old_seen = [r[0] for r in rows if r[3] in old]
    switch_end = (max(old_seen) if old_seen else promoted_at) + 5.0
    steady = latencies[started < promoted_at]
    during = latencies[(started >= promoted_at) & (started <= switch_end)]
    by_version: dict[str, int] = {}
    for row in rows:
        by_version[row[3] or row[2]] = by_version.get(row[3] or row[2], 0) + 1
    return {"requests": len(rows), "failed": sum(r[2] != "OK" for r in rows),
            "other_versions": sum(r[2] == "OK" and r[3] not in old | new for r in rows),
            "by_version": by_version, "promoted_at_s": round(promoted_at, 2),
            "last_old_version_answer_s": round(max(old_seen), 2) if old_seen else None,
            "steady_p99_ms": round(float(np.percentile(steady, 99)), 2),
            "switch_p99_ms": round(float(np.percentile(during, 99)), 2) if len(during) else None,
            "switch_requests": int(len(during))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--promote-at", type=float, default=20.0)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--artifacts", type=Path,
                        default=Path(os.environ.get("MOVIEREC_ARTIFACTS", "artifacts")))
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    header("promotion under load")
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
            env = {**addresses, "MOVIEREC_LOG_LEVEL": "WARNING", "MOVIEREC_ARTIFACTS": str(root)}
            with Processes(env, Path(tmp) / "logs") as procs:
                for name in ("catalog", "retriever", "embedder", "gateway"):
                    procs.start(name)
                result = run(args, procs.env["GATEWAY_ADDR"], root, Path(tmp), addresses)
        finally:
            stores.stop()
    print(json.dumps(result, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps({"command": command_line(), **result}, indent=1))
    return 0 if result["failed"] == 0 and result["other_versions"] == 0 else 1


def run(args, gateway: str, root: Path, tmp: Path, addresses: dict[str, str]) -> dict:
    kinds = ("profile", "liked", "user")
    pools = [miss_requests(kind, 4000, seed=11) for kind in kinds]
    requests = [json_format.ParseDict(pool[i], pb.RecommendRequest())
                for i in range(4000) for pool in pools]
    old = {f"{m}@{latest(m, root).name}" for m in registry.NAMES}
    new_paths = challengers(root, tmp / "challengers")
    new = {f"{m}@{p.name}" for m, p in new_paths.items()}
    promoted: dict[str, float] = {}

    def promotion() -> None:
        time.sleep(args.promote_at)
        promoted["at"] = time.perf_counter()
        store = MilvusVectors(addresses["MILVUS_URI"], timeout=60)
        for model in registry.NAMES:
            print(f"promoted {promote(store, new_paths[model], root)}", flush=True)
        store.close()
        promoted["done"] = time.perf_counter()
    thread = threading.Thread(target=promotion)
    began = time.perf_counter()
    thread.start()
    rows = asyncio.run(drive(gateway, requests, args.seconds, args.in_flight))
    thread.join()
    result = summary(rows, promoted["at"] - began, old, new)
    result["promotion_seconds"] = round(promoted["done"] - promoted["at"], 2)
    return result


if __name__ == "__main__":
    sys.exit(main())
