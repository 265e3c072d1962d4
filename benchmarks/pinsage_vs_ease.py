"""Is PinSage's served user-id path different from EASE on recbole test? A paired bootstrap.

Per test user, NDCG@10 and Recall@10 of PinSage (the artifact's rating-weighted whole
history, what ``EmbedHistory`` serves and ``movierec evaluate pinsage`` reports) and of
EASE (``--lam``, the value tuned on valid), ranked by the evaluation's own
:func:`~movierec.evaluation.ranking.rank`; then the mean per-user difference and its
95 % bootstrap interval (users resampled with replacement).

    MOVIELENS_DIR=../shared/data/ml-1m .venv/bin/python benchmarks/pinsage_vs_ease.py \\
        .movierec/eval/artifacts-recbole/pinsage/<version> [--lam 500]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header  # noqa: E402
from movierec.data.source import load_dataset  # noqa: E402
from movierec.evaluation.baselines import Ease  # noqa: E402
from movierec.evaluation.metrics import ndcg, recall  # noqa: E402
from movierec.evaluation.protocols import build  # noqa: E402
from movierec.evaluation.ranking import RankingTask, Scorer, rank  # noqa: E402
from movierec.evaluation.serving import ItemSpace, pinsage_history  # noqa: E402
from movierec.models.pinsage.encoder import PinSageEncoder  # noqa: E402


def per_user(scorer: Scorer, task: RankingTask, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """NDCG@k and Recall@k of every evaluated user, ranked as :func:`ranking.evaluate` ranks."""
    found = rank(scorer, task, k)
    return ndcg(found.hits, found.num_relevant), recall(found.hits, found.num_relevant)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="a PinSage artifact trained on recbole_811")
    parser.add_argument("--lam", type=float, default=500.0)
    parser.add_argument("--seed", type=int, default=2026, help="the split's seed")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    header("PinSage vs EASE, paired bootstrap over recbole test users")
    data = build(load_dataset("ml-1m"), "recbole", args.seed)
    task = data.test
    encoder = PinSageEncoder.load(args.artifact)
    items = ItemSpace.load(args.artifact, task.movie_ids)
    mine = per_user(pinsage_history(encoder, items)(task), task)
    ease = per_user(Ease(data.train).factory(args.lam)(task), task)
    rng = np.random.default_rng(0)
    for name, a, b in (("ndcg@10", mine[0], ease[0]), ("recall@10", mine[1], ease[1])):
        diff = a - b
        means = [diff[rng.integers(0, len(diff), len(diff))].mean()
                 for _ in range(args.resamples)]
        low, high = np.percentile(means, [2.5, 97.5])
        print(f"{name}: PinSage {a.mean():.4f}, EASE {b.mean():.4f}, difference "
              f"{diff.mean():+.5f}, 95 % interval [{low:+.4f}, {high:+.4f}]; users better / "
              f"worse {(diff > 0).sum()} / {(diff < 0).sum()} of {len(diff)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
