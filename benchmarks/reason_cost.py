"""CPU a user-id miss spends on its reasons (issue 33: at most 0.3 ms, no extra round trip).

What a reason adds to one user-id miss, measured on the code that serves it, with real
histories (ml-1m ratings, every user's whole history, as the gateway reads it):

* gateway: the liked movies picked from the history (:class:`UserKind`) and their ids
  serialised into the ``SearchRequest`` (``liked_ids``), against the same request
  without them;
* retriever: the ids parsed and validated, and each hit's reason picked from its stored
  row (:class:`HitFacts` with every row in memory, the steady state, and
  :func:`facts.explain`), for a page of 20 hits.

No reading (fusion's stars) is involved: user-id answers are PinSage's. CPU is this
process's ``time.process_time`` over ``--users`` users, repeated ``--repeat`` times.

    MOVIELENS_DIR=../shared/data/ml-1m .venv/bin/python benchmarks/reason_cost.py \\
        --artifact .movierec/eval/artifacts-recbole/pinsage/<version>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header  # noqa: E402
from movierec import limits, validation  # noqa: E402
from movierec.apps.gateway.kinds import LIKED_STARS  # noqa: E402
from movierec.data.source import load_dataset  # noqa: E402
from movierec.models import reasons  # noqa: E402
from movierec.models.artifact import latest, read_item_vectors  # noqa: E402
from movierec.retriever.v1 import retriever_pb2 as pb  # noqa: E402
from movierec.services.retriever.facts import Fact, HitFacts, explain  # noqa: E402
from movierec.services.retriever.records import ModelCollection  # noqa: E402

PAGE = 20


def gateway_side(histories: list[tuple[list[int], list[int]]], vector: list[float]) -> float:
    """Seconds of CPU to pick the liked ids and serialise them, over all histories."""
    start = time.process_time()
    for movie_ids, ratings in histories:
        liked = tuple(m for m, r in zip(movie_ids, ratings, strict=True) if r >= LIKED_STARS)
        pb.SearchRequest(model="pinsage", vector=vector, top_k=PAGE, exclude_ids=movie_ids,
                         liked_ids=liked).SerializeToString()
    with_reasons = time.process_time() - start
    start = time.process_time()
    for movie_ids, _ in histories:
        pb.SearchRequest(model="pinsage", vector=vector, top_k=PAGE,
                         exclude_ids=movie_ids).SerializeToString()
    return with_reasons - (time.process_time() - start)


def retriever_side(requests: list[tuple[bytes, bytes]], facts: HitFacts, live,
                   pages: list[list[tuple[int, float]]]) -> float:
    """Seconds of CPU to parse the liked ids and pick each hit's reason."""
    async def explained(page, liked):
        found = await facts.get(live, [m for m, _ in page], 1.0)
        return explain(page, found, liked, None)

    async def run() -> float:
        start = time.process_time()
        for (with_ids, _), page in zip(requests, pages, strict=True):
            request = pb.SearchRequest.FromString(with_ids)
            liked = frozenset(validation.id_list("liked_ids", request.liked_ids,
                                                 limits.MAX_EXCLUDE))
            await explained(page, liked)
        spent = time.process_time() - start
        start = time.process_time()
        for (_, without), _page in zip(requests, pages, strict=True):
            pb.SearchRequest.FromString(without)
        return spent - (time.process_time() - start)
    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=None,
                        help="a pinsage artifact with a reasons table (default: latest)")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    header("CPU of the reasons per user-id miss")
    path = args.artifact or latest("pinsage")
    ids, vectors = read_item_vectors(path)
    table = reasons.load(path)
    data = load_dataset("ml-1m")
    rng = np.random.default_rng(0)
    users = rng.choice(data.ratings["user_id"].unique(), args.users, replace=False)
    frame = data.ratings[data.ratings["user_id"].isin(set(users))]
    frame = frame.sort_values(["user_id", "timestamp"], ascending=[True, False])
    histories = [(g["movie_id"].astype(int).tolist(), g["rating"].astype(int).tolist())
                 for _, g in frame.groupby("user_id")]
    vector = vectors[0].tolist()
    live = ModelCollection("pinsage", "v", "c", len(vector), len(ids), "FLAT", reasons=100)
    facts = HitFacts(store=None)
    for movie_id, row, item in zip(ids.tolist(), table, vectors, strict=True):
        facts._remember(("c", movie_id), Fact(item, tuple(int(m) for m in row if m)))
    pages = [[(int(m), 1.0) for m in rng.choice(ids[:1000], PAGE, replace=False)]
             for _ in histories]
    requests = [(pb.SearchRequest(model="pinsage", vector=vector, exclude_ids=m,
                                  liked_ids=[x for x, r in zip(m, r_, strict=True)
                                             if r >= LIKED_STARS]).SerializeToString(),
                 pb.SearchRequest(model="pinsage", vector=vector,
                                  exclude_ids=m).SerializeToString())
                for m, r_ in histories]
    rows = []
    for _ in range(args.repeat):
        gateway = gateway_side(histories, vector)
        retriever = retriever_side(requests, facts, live, pages)
        rows.append({"gateway_ms_per_miss": round(1000 * gateway / len(histories), 4),
                     "retriever_ms_per_miss": round(1000 * retriever / len(histories), 4)})
    sizes = [len(m) for m, _ in histories]
    print(json.dumps({"artifact": str(path), "users": len(histories),
                      "history_mean": round(float(np.mean(sizes)), 1),
                      "history_max": int(max(sizes)), "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
