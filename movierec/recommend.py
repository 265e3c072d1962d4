"""``movierec recommend``: ask the gateway and print the seed's Top / Id / Title / Score table.

    movierec recommend --age 25 --gender F --occupation 4 --top 5
    movierec recommend --liked 1,260,1196
    movierec recommend --age 25 --gender F --occupation 4 --liked 1,260   # onboarding
    movierec recommend --user 42 --exclude-seen
    movierec recommend --similar 1

Goes through the gateway at ``--gateway`` (default ``GATEWAY_ADDR`` or 127.0.0.1:50050),
so it shows exactly what the service answers; scores are stars for profile queries
and similarities otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import grpc

from movierec import settings
from movierec.common.v1 import common_pb2
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.gateway.v1 import gateway_pb2_grpc
from movierec.security import tls
from movierec.server import client


def _ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated ids: {text}") from exc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="movierec recommend", description=__doc__.splitlines()[0])
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--age", "-a", type=int, help="profile: age in years (with -g, -j)")
    p.add_argument("--liked", type=_ids, help="comma-separated liked movie ids (with --age: "
                   "the profile and the likes combined, as a new user's onboarding)")
    kind.add_argument("--user", type=int, help="a known user id")
    kind.add_argument("--next", type=int, metavar="USER",
                      help="what this known user will watch next (SASRec)")
    kind.add_argument("--similar", type=int, help="movies similar to this movie id")
    p.add_argument("--gender", "-g", choices=("M", "F"), default="F")
    p.add_argument("--occupation", "-j", type=int, default=0, help="ml-1m occupation id 0-20")
    p.add_argument("--top", "-n", type=int, default=10)
    p.add_argument("--genres", type=lambda s: s.split(","), default=[])
    p.add_argument("--include-seen", action="store_true",
                   help="also show movies the user has rated (hidden by default)")
    p.add_argument("--gateway", default=os.environ.get("GATEWAY_ADDR", "127.0.0.1:50050"))
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--token", default="", help="the user's token (movierec token --user ID), "
                   "when the gateway requires one")
    return p


def request_for(args: argparse.Namespace):
    """(RPC name, request) for the parsed arguments."""
    if args.similar is not None:
        return "SimilarMovies", pb.SimilarMoviesRequest(movie_id=args.similar, top_k=args.top,
                                                        genres=args.genres)
    common = {"top_k": args.top, "genres": args.genres, "include_seen": args.include_seen}
    if args.age is not None:
        profile = common_pb2.Profile(age=args.age, gender=args.gender,
                                     occupation=args.occupation)
        if args.liked is not None:
            return "Recommend", pb.RecommendRequest(profile_and_liked=pb.ProfileAndLiked(
                profile=profile, liked=common_pb2.LikedMovies(movie_ids=args.liked)), **common)
        return "Recommend", pb.RecommendRequest(profile=profile, **common)
    if args.liked is not None:
        return "Recommend", pb.RecommendRequest(liked=common_pb2.LikedMovies(
            movie_ids=args.liked), **common)
    if args.next is not None:
        return "Recommend", pb.RecommendRequest(next_for_user_id=args.next, **common)
    return "Recommend", pb.RecommendRequest(user_id=args.user, **common)


def table(reply) -> str:
    """The seed system's layout: Top / Id / Title / Score, plus the reason."""
    width = max([len(f"{i.title} ({i.year})") for i in reply.items] + [5])
    lines = [f"{'Top':>3}  {'Id':>6}  {'Title':<{width}}  {'Score':>6}  Reason"]
    for rank, item in enumerate(reply.items, 1):
        title = f"{item.title} ({item.year})" if item.year else item.title
        lines.append(f"{rank:>3}  {item.movie_id:>6}  {title:<{width}}  {item.score:>6.3f}  "
                     f"{item.reason}")
    footer = f"model {reply.model_version}" + ("  (cached)" if reply.cached else "")
    return "\n".join([*lines, footer])


async def ask(address: str, method: str, request, timeout: float, token: str = ""):
    """One call to the gateway, over TLS when MOVIEREC_TLS_* say so."""
    credentials = tls.channel_credentials(settings.server_settings())
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    async with client.channel(address, credentials=credentials) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        return await getattr(stub, method)(request, timeout=timeout, metadata=metadata)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments: one query, where --liked goes alone or with --age (onboarding)."""
    p = parser()
    args = p.parse_args(argv)
    others = [name for name in ("user", "next", "similar") if getattr(args, name) is not None]
    if args.liked is not None and others:
        p.error(f"--liked goes alone or with --age, not with --{others[0]}")
    if args.age is None and args.liked is None and not others:
        p.error("give one of --age, --liked, --user, --next or --similar")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    method, request = request_for(args)
    try:
        reply = asyncio.run(ask(args.gateway, method, request, args.timeout, args.token))
    except grpc.aio.AioRpcError as exc:
        print(f"movierec recommend: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(table(reply))
    return 0
