"""HR@10 and NDCG@10 against history length: the served SASRec path beside EASE and
MostPop on one protocol's test users (docs/sequence.md's plot).

Test users are bucketed by the length of the history the task gives them (what the
user-id path reads); per bucket, the mean HR@10 and NDCG@10 of each row, from the
evaluation's own ranking code (masked full ranking). EASE's lambda is chosen on the
protocol's validation users over the evaluation's grid, as ``movierec evaluate`` does.

    MOVIELENS_DIR=../shared/data/ml-1m .venv/bin/python benchmarks/sequence_by_length.py \\
        --protocol leave_last_out --artifact .movierec/eval/artifacts-leave_last_out \\
        --plot docs/images/sequence-by-length.png --json-out /tmp/by_length.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header  # noqa: E402
from movierec.data.source import load_dataset  # noqa: E402
from movierec.evaluation import artifacts, baselines, protocols, runner  # noqa: E402
from movierec.evaluation.metrics import ndcg  # noqa: E402
from movierec.evaluation.ranking import rank  # noqa: E402
from movierec.models.sasrec.commands import served_factory  # noqa: E402
from movierec.models.sasrec.encoder import SasRecEncoder  # noqa: E402

EDGES = (0, 50, 100, 200, 400, 800, 10**9)


def per_user(factory, task) -> tuple[np.ndarray, np.ndarray]:
    """(HR@10, NDCG@10) of each evaluated user (``task.rows`` order)."""
    found = rank(factory(task), task, 10)
    return found.hits.any(axis=1).astype(float), ndcg(found.hits, found.num_relevant)


def buckets(lengths: np.ndarray, values: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[dict]:
    out = []
    for low, high in zip(EDGES[:-1], EDGES[1:], strict=True):
        inside = (lengths > low) & (lengths <= high)
        if not inside.any():
            continue
        row = {"from": low, "to": high, "users": int(inside.sum())}
        for name, (hr, nd) in values.items():
            row[name] = {"hr@10": round(float(hr[inside].mean()), 4),
                         "ndcg@10": round(float(nd[inside].mean()), 4)}
        out.append(row)
    return out


def plot(rows: list[dict], names: list[str], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"{r['from'] + 1}-{r['to']}" if r["to"] < 10**9 else f">{r['from']}"
              for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("hr@10", "ndcg@10"), strict=True):
        for name in names:
            ax.plot(labels, [r[name][metric] for r in rows], marker="o", label=name)
        ax.set_xlabel("history length (ratings before the target)")
        ax.set_ylabel(metric.upper().replace("HR", "HR"))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--protocol", default="leave_last_out",
                        choices=list(protocols.PROTOCOL_SPLITS))
    parser.add_argument("--artifact", type=Path, required=True,
                        help="a sasrec version, model directory or artifacts root")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    header(f"HR@10 / NDCG@10 by history length, {args.protocol}")
    data = load_dataset(args.dataset)
    path = artifacts.resolve(args.artifact, "sasrec")
    meta = artifacts.check(path, data, protocols.split_for(args.protocol), "movierec train")
    built = protocols.build(data, args.protocol, int(meta["split_seed"]))
    task = built.test
    lam, ease, _, _ = runner.choose(baselines.EASE_GRID, baselines.Ease(built.train).factory,
                                    built)
    values = {"SASRec (served)": per_user(served_factory(SasRecEncoder.load(path)), task),
              f"EASE (lambda {lam:g})": per_user(ease, task),
              "MostPop": per_user(baselines.most_pop(built.train), task)}
    lengths = np.diff(task.history.indptr)[task.rows]
    rows = buckets(lengths, values)
    result = {"protocol": args.protocol, "artifact": str(path), "buckets": rows,
              "all": {n: {"hr@10": round(float(h.mean()), 4), "ndcg@10": round(float(d.mean()), 4)}
                      for n, (h, d) in values.items()}}
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    if args.plot:
        plot(rows, list(values), args.plot,
             f"{data.name} {args.protocol}: test users by history length")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
