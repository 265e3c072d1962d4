"""Does the order of one second's ratings carry the next movie? A first-order Markov
chain answers without training a network (docs/sequence.md, "Ties").

MovieLens stamps ratings with whole seconds; half of a user's consecutive ratings share
one. The chain counts movie-to-next-movie transitions in every user's training
sequence and ranks the catalog after each ``leave_last_out`` user's last history item
(full ranking, the history masked; HR@10 on the valid and test items). Only the order
inside a second changes between rows:

* ``recorded``: the files' line order, as the catalog now keeps it (``oldest_first``);
* ``shuffled``: a random order inside each second (seeded);
* ``movie id``: movie id descending inside a second (the catalog's order before).

A second table splits the test users (recorded order) by the time between their last
two history ratings: how often the test rating comes in the same second as the last
one, and the chain's HR@10 there (what SASRec's gap table reads).

The held-out items are the same in every row (the split's: the last by time, ties by
line); only the histories and the transitions counted are reordered.

    MOVIELENS_DIR=../shared/data/ml-1m .venv/bin/python benchmarks/tie_order.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header  # noqa: E402
from movierec.data.source import load_dataset  # noqa: E402
from movierec.data.splits import make_split  # noqa: E402
from movierec.evaluation.onboarding import in_time_order  # noqa: E402
from movierec.models.user_input import oldest_first  # noqa: E402

ORDERS = ("recorded", "shuffled", "movie id")


def ordered(frame: pd.DataFrame, order: str, seed: int) -> pd.DataFrame:
    """``frame`` per user by time, ties in ``order``."""
    if order == "recorded":
        return oldest_first(frame)
    if order == "shuffled":
        return in_time_order(frame, seed)      # the onboarding protocol's seeded draw
    return frame.assign(_tie=-frame["movie_id"].to_numpy()).sort_values(
        ["user_id", "timestamp", "_tie"]).drop(columns="_tie")


def transitions(frame: pd.DataFrame, size: int) -> sparse.csr_matrix:
    """Counts of movie a followed by movie b in one user's sequence."""
    users, movies = frame["user_id"].to_numpy(), frame["movie_id"].to_numpy()
    same = users[1:] == users[:-1]
    ones = np.ones(int(same.sum()), np.float32)
    return sparse.csr_matrix((ones, (movies[:-1][same], movies[1:][same])), (size, size))


def hits(chain: sparse.csr_matrix, history: pd.DataFrame, targets: pd.Series) -> pd.Series:
    """Per user: is the target in the top 10 after their last history item (their
    history masked)?"""
    out = {}
    for user, group in history.groupby("user_id", sort=False):
        scores = chain[int(group["movie_id"].iloc[-1])].toarray().ravel()
        scores[group["movie_id"].to_numpy()] = -1.0
        out[user] = int(targets[user] in np.argpartition(-scores, 10)[:10])
    return pd.Series(out)


def hit_rate(chain: sparse.csr_matrix, history: pd.DataFrame, targets: pd.Series) -> float:
    """HR@10 of ranking after each user's last history item, their history masked."""
    return float(hits(chain, history, targets).mean())


#: buckets of the time between a user's last two history ratings (seconds)
GAP_EDGES = [-1.5, -0.5, 0.5, 60, 3600, 86400, np.inf]
GAP_NAMES = ["no rating before", "same second", "1-60 s", "1-60 min", "1-24 h", "> 1 day"]


def by_gap(chain: sparse.csr_matrix, history: pd.DataFrame, test: pd.DataFrame
           ) -> pd.DataFrame:
    """Test users by the gap between their last two history ratings: how many, how often
    the test rating comes in the same second as the last one, and the chain's HR@10 —
    what a model that reads the gap can tell apart (docs/sequence.md, "Gaps")."""
    rows = []
    target = test.set_index("user_id")
    scored = hits(chain, history, target["movie_id"])
    for user, group in history.groupby("user_id", sort=False):
        times = group["timestamp"].to_numpy()
        gap = times[-1] - times[-2] if len(times) > 1 else -1
        rows.append((gap, int(target.at[user, "timestamp"]) == times[-1], scored[user]))
    frame = pd.DataFrame(rows, columns=["gap", "next_same_second", "hit"])
    frame["bucket"] = pd.cut(frame["gap"], GAP_EDGES, labels=GAP_NAMES)
    return frame.groupby("bucket", observed=True).agg(
        users=("hit", "size"), next_same_second=("next_same_second", "mean"),
        test_hr10=("hit", "mean"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    header("tie order: a first-order Markov chain on leave_last_out")
    data = load_dataset(args.dataset)
    split = make_split(data, "leave_last_out", seed=args.seed)
    size = int(data.movies["movie_id"].max()) + 1
    rows = {}
    for order in ORDERS:
        train = ordered(split.train, order, args.seed)
        chain = transitions(train, size)
        rows[order] = {
            "valid_hr@10": hit_rate(chain, train, split.valid.set_index("user_id")["movie_id"]),
            "test_hr@10": hit_rate(chain, ordered(pd.concat([split.train, split.valid]),
                                                  order, args.seed),
                                   split.test.set_index("user_id")["movie_id"])}
        print(f"{order:>9}: valid HR@10 {rows[order]['valid_hr@10']:.4f}, "
              f"test HR@10 {rows[order]['test_hr@10']:.4f}", flush=True)
    history = ordered(pd.concat([split.train, split.valid]), "recorded", args.seed)
    gaps = by_gap(transitions(ordered(split.train, "recorded", args.seed), size), history,
                  split.test)
    print("\nrecorded order, test users by the gap between their last two ratings:\n"
          + gaps.round(4).to_string(), flush=True)
    rows["by_gap"] = gaps.round(4).reset_index().astype({"bucket": str}).to_dict("records")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
