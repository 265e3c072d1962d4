"""docs/trace-waterfall.png: one user-id miss traced through a real local stack.

Starts PostgreSQL, Redis, Milvus and the four services as ``movierec serve`` processes
on tiny models trained on synthetic data (tests/stack_fixture.py, what the end-to-end
tests run), with ``MOVIEREC_TRACE_FILE`` set. Two warm-up requests, then
``Recommend{user_id}`` for a user nobody asked about yet (a cache miss) sent with a
``traceparent`` whose trace id is chosen here, so the waterfall of exactly that
request is drawn (``movierec trace waterfall``) and printed as text.

    .venv/bin/python scripts/trace_waterfall.py [--out docs/trace-waterfall.png] [--milvus]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from stack_fixture import running_stack  # noqa: E402

from movierec.common.v1 import common_pb2  # noqa: E402
from movierec.gateway.v1 import gateway_pb2 as pb  # noqa: E402
from movierec.gateway.v1 import gateway_pb2_grpc  # noqa: E402
from movierec.stack.stores import LocalStores  # noqa: E402
from movierec.tracing import waterfall  # noqa: E402
from movierec.tracing.sdk import FILE_DELAY_MS  # noqa: E402

#: Warm-up requests first (every channel connected, Redis' scripts loaded, each model
#: used once), as in a stack that has served for a while.
PROFILE = common_pb2.Profile(age=30, gender="M", occupation=1)


async def recommend(gateway: str, request: pb.RecommendRequest, trace_id: str) -> bool:
    """Send ``request`` as part of trace ``trace_id``; whether it was answered from cache."""
    parent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    async with grpc.aio.insecure_channel(gateway) as channel:
        reply = await gateway_pb2_grpc.GatewayStub(channel).Recommend(
            request, timeout=10, metadata=(("traceparent", parent),))
    return reply.cached


def traced_miss(root: Path, database: str, milvus: str, user_id: int,
                search_milvus: bool) -> tuple[Path, str]:
    """Run the stack under ``root``, send the warm-up and the miss; (trace file, id)."""
    trace_file, trace_id = root / "traces.jsonl", secrets.token_hex(16)

    def configure(env: dict[str, str], _redis) -> None:
        env["MOVIEREC_TRACE_FILE"] = str(trace_file)
        if search_milvus:   # else the small collections are searched in memory
            env["RETRIEVER_MEMORY_BELOW"] = "0"
    with running_stack(root, database, milvus, configure) as stack:
        for warm in (pb.RecommendRequest(profile=PROFILE, top_k=10),
                     pb.RecommendRequest(user_id=user_id + 1, top_k=10)):
            asyncio.run(recommend(stack.gateway, warm, secrets.token_hex(16)))
        cached = asyncio.run(recommend(stack.gateway, pb.RecommendRequest(
            user_id=user_id, top_k=10), trace_id))
        assert not cached, "the user-id request was answered from the cache"
        time.sleep(3 * FILE_DELAY_MS / 1000)   # the services' last batch reaches the file
    return trace_file, trace_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "trace-waterfall.png")
    parser.add_argument("--user-id", type=int, default=42)
    parser.add_argument("--milvus", action="store_true",
                        help="search Milvus (RETRIEVER_MEMORY_BELOW=0), not the copy in memory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stores = LocalStores(root=Path(tmp) / "stores", durable=False,
                             want=("postgres", "milvus"),
                             environ={**os.environ, "DATABASE_URL": "", "MILVUS_URI": ""})
        addresses = stores.start()
        try:
            trace_file, trace_id = traced_miss(Path(tmp) / "stack", addresses["DATABASE_URL"],
                                               addresses["MILVUS_URI"], args.user_id,
                                               args.milvus)
            title = (f"Recommend{{user_id: {args.user_id}}}, cache miss: trace {trace_id} "
                     "(synthetic models, local stack)")
            return waterfall.main(["--file", str(trace_file), "--trace-id", trace_id,
                                   "--out", str(args.out), "--title", title])
        finally:
            stores.stop()


if __name__ == "__main__":
    sys.exit(main())
