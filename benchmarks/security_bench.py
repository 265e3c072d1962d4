"""What TLS, token checks and the rate limit cost per gateway call (docs/security.md).

Five real gateway servers in this process, their backends replaced by an in-memory
stub so only the gateway's own work is timed: ``ListPopular`` called sequentially by
one client over one channel per server (after a warm-up), in interleaved rounds, under
each configuration:

    plain            no TLS, no token, no limit
    mtls             mutual TLS (certificates made here)
    auth             plaintext, every call carries an HS256 token that is verified
    ratelimit        plaintext, one Lua token-bucket round trip to a local Redis per call
    all              mtls + auth + ratelimit

    python benchmarks/security_bench.py [--calls 500] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from certs import Authority  # noqa: E402

from movierec import settings  # noqa: E402
from movierec.apps.gateway.cache import Cache  # noqa: E402
from movierec.apps.gateway.guard import Guard  # noqa: E402
from movierec.apps.gateway.ratelimit import RateLimiter  # noqa: E402
from movierec.apps.gateway.server import SERVICE  # noqa: E402
from movierec.apps.gateway.servicer import GatewayServicer  # noqa: E402
from movierec.gateway.v1 import gateway_pb2 as pb  # noqa: E402
from movierec.gateway.v1 import gateway_pb2_grpc  # noqa: E402
from movierec.security import tls, tokens  # noqa: E402
from movierec.server import client  # noqa: E402
from movierec.server.factory import ServiceSpec, build_server  # noqa: E402
from movierec.stack.local_redis import LocalRedis  # noqa: E402

CONFIGS = ("plain", "mtls", "auth", "ratelimit", "all")
ROUND = 50


class Popular:
    """The one backend call ListPopular makes, answered in memory."""

    async def popular(self, genres, limit, exclude, deadline):
        return []


class Versions:
    value = ""


@asynccontextmanager
async def started(config: str, redis_url: str, pki: dict):
    """A gateway under ``config`` and (its stub, the metadata each call carries)."""
    mtls = config in ("mtls", "all")
    keys = tokens.load_keys(json.dumps(tokens.new_hmac_jwks("bench")))
    auth = config in ("auth", "all")
    limited = config in ("ratelimit", "all")
    cache = Cache(redis_url if limited else "", 60, 0.5)
    guard = Guard(tokens.Verifier(keys, "movierec", "movierec") if auth else None,
                  RateLimiter(cache.redis, 1e6, 1_000_000) if limited else None)
    server_tls = (settings.ServerSettings(tls_cert=pki["cert"], tls_key=pki["key"],
                                          tls_ca=pki["ca"]) if mtls
                  else settings.ServerSettings())
    servicer = GatewayServicer(Popular(), cache, Versions(), call_timeout=1.0)
    spec = ServiceSpec(SERVICE, servicer, gateway_pb2_grpc.add_GatewayServicer_to_server)
    server, port = await build_server("gateway", [spec], 0, server_tls, guard)
    metadata = ((("authorization", "Bearer " + tokens.issue(
        keys["bench"], "42", 3600, "movierec", "movierec")),) if auth else ())
    try:
        async with client.channel(f"127.0.0.1:{port}",
                                  credentials=tls.channel_credentials(server_tls)) as channel:
            yield gateway_pb2_grpc.GatewayStub(channel), metadata
    finally:
        await server.stop(0)
        await cache.close()


async def measure(calls: int, redis_url: str, pki: dict) -> dict[str, list[float]]:
    """Per-call seconds of each config, run in interleaved rounds of 50 so that load
    from elsewhere on the machine falls on every config alike."""
    seconds: dict[str, list[float]] = {c: [] for c in CONFIGS}
    async with AsyncExitStack() as stack:
        gateways = {c: await stack.enter_async_context(started(c, redis_url, pki))
                    for c in CONFIGS}
        for rounds in range(-1, calls // ROUND):      # round -1 warms up
            for config, (stub, metadata) in gateways.items():
                for _ in range(ROUND):
                    start = time.perf_counter()
                    await stub.ListPopular(pb.ListPopularRequest(limit=5), timeout=5,
                                           metadata=metadata)
                    if rounds >= 0:
                        seconds[config].append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import logging
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        redis = LocalRedis(Path(folder) / "redis")
        url = redis.start()
        pki = Authority.new("bench CA").issue_files(Path(folder) / "pki", "gateway")
        try:
            results = asyncio.run(measure(args.calls, url, pki))
        finally:
            redis.stop()
    rows = {c: {"mean_ms": round(1000 * statistics.fmean(s), 3),
                "p50_ms": round(1000 * statistics.median(s), 3),
                "p99_ms": round(1000 * statistics.quantiles(s, n=100)[98], 3)}
            for c, s in results.items()}
    base = rows["plain"]["p50_ms"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'config':10s} {'mean ms':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'p50 +ms':>8s}")
    for name, row in rows.items():
        print(f"{name:10s} {row['mean_ms']:8.3f} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} "
              f"{row['p50_ms'] - base:+8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
