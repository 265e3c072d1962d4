"""``movierec evaluate onboarding``: a profile plus k first likes, every row, several draws.

Needs the fusion and PinSage artifacts trained on the user cold-start split
(``movierec train MODEL --split users_80_10_10``). For each draw (``--draws`` seeds of
the same-second order) and each k of :data:`~.onboarding.GIVEN_COUNTS` it scores the
rows of :mod:`.onboarding` on validation and test, tunes the combination's profile
weight and EASE's lambda on validation, and reports the served combination
(weight rule :data:`movierec.models.onboarding.RULE`) beside the rule validation
chooses from :data:`~movierec.models.onboarding.RULE_GRID` (mean validation NDCG@10 over
k >= 1 and draws) and beside a constant weight tuned per k (an upper bound).
Writes ``onboarding.json``, ``.md`` and ``.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from movierec.data.source import load_dataset
from movierec.evaluation import artifacts, baselines, onboarding_report, protocols, runner
from movierec.evaluation.onboarding import GIVEN_COUNTS, Users, held_out_ndcg, protocol_at
from movierec.evaluation.onboarding_paths import OnboardingScorers
from movierec.evaluation.serving import ServedModels
from movierec.models import onboarding as blend

MODELS = (blend.PROFILE_MODEL, blend.LIKED_MODEL)
SPLIT = protocols.split_for("cold_start")
#: what validation chooses by: each user has dozens of targets, so Recall@10 is capped
#: near 10 / targets and barely moves; NDCG@10 is the issue's measure
BY = "ndcg@10"


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    for model in MODELS:
        parser.add_argument(f"--{model}", type=Path, default=None,
                            help=f"{model} artifact (default: the latest under --artifacts)")
    parser.add_argument("--draws", type=int, default=3,
                        help="draws of the same-second order (seeds 0..N-1)")
    parser.add_argument("--given", type=int, nargs="+", default=list(GIVEN_COUNTS))
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for onboarding.json/.md/.png")


class CachedEase(baselines.Ease):
    """EASE whose weights are kept per lambda (every k and draw reuses them)."""

    def __init__(self, train) -> None:
        super().__init__(train)
        self.weights = lru_cache(maxsize=None)(self.weights)


def _one(scorers: OnboardingScorers, ease: CachedEase, data, k: int) -> dict[str, dict]:
    """Every row at ``k`` given likes on one draw's tasks; ``rules``: the validation
    NDCG@10 of every weight rule."""
    rows = {"combined": runner.measure(scorers.combined(), data),
            "profile": runner.measure(scorers.profile, data)}
    if k > 0:
        rows["rules"] = runner.choose(blend.RULE_GRID, scorers.combined, data, by=BY)[3]
        rows["combined_tuned"] = runner.tune(
            "weight", blend.WEIGHT_GRID, lambda w: scorers.combined((w, 0.0)), data, by=BY)
        rows["liked"] = runner.measure(scorers.liked, data)
        rows["ease"] = runner.tune("lambda", baselines.EASE_GRID, ease.factory, data, by=BY)
    rows.update(runner.run_baselines(data, ("grouppop", "mostpop")))
    return rows


def _held_out(scorers: OnboardingScorers, data, users: Users, seed: int,
              popular: np.ndarray) -> dict[str, float]:
    """MeLU's view on the test users: nDCG@3 of each row over 10 later rated movies."""
    held = users.held_out(seed)
    if held.empty:
        return {}
    user_ids = np.unique(held["user_id"].to_numpy())
    rows = np.searchsorted(data.user_ids, user_ids)
    cols = np.searchsorted(data.movie_ids, held["movie_id"].to_numpy()).reshape(len(rows), -1)
    stars = held["rating"].to_numpy(np.float64).reshape(len(rows), -1)
    task = data.test
    scores = {"combined": scorers.exact(task, rows),
              "profile": scorers.profile(task)(rows),
              "mostpop": np.broadcast_to(popular, (len(rows), len(popular)))}
    if task.history[rows].nnz:
        scores["liked"] = scorers.liked(task)(rows)
    out = {name: float(np.mean(held_out_ndcg(np.take_along_axis(s, cols, axis=1), stars)))
           for name, s in scores.items()}
    return {**{k: round(v, 5) for k, v in out.items()}, "users": int(len(rows))}


def evaluate(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    data = load_dataset(args.dataset, args.data_dir)
    paths = {m: artifacts.resolve(getattr(args, m), m, args.artifacts) for m in MODELS}
    seed = artifacts.common_seed([artifacts.check(p, data, SPLIT, f"movierec train {m}")
                                  for m, p in paths.items()])
    base = protocols.build(data, "cold_start", seed)
    models = ServedModels.load(paths, base.movie_ids)
    scorers = OnboardingScorers(models, base, data.users)
    ease = CachedEase(base.train)
    popular = baselines.item_counts(base.train)
    draws: list[dict] = []
    for draw in range(args.draws):
        per_k, held = {}, {}
        for k in args.given:
            at_k = protocol_at(base, base.split, k, draw)
            per_k[str(k)] = _one(scorers, ease, at_k, k)
            held[str(k)] = _held_out(scorers, at_k, Users.of(base.split.test, draw), draw,
                                     popular)
        draws.append({"seed": draw, "rows": per_k, "held_out_ndcg@3": held})
        print(f"draw {draw} done ({time.perf_counter() - started:.0f} s)", flush=True)
    result = {"dataset": data.name, "split": SPLIT, "split_seed": seed,
              "artifacts": {m: str(p) for m, p in paths.items()},
              "rule_served": list(blend.RULE),
              "weights_served": {str(k): round(blend.weight(k), 4)
                                 for k in args.given if k > 0},
              "users": {"valid": int(at_k.valid.rows.size), "test": int(at_k.test.rows.size)},
              "draws": draws, "summary": onboarding_report.summarize(draws),
              "seconds": round(time.perf_counter() - started, 1)}
    if args.out is not None:
        onboarding_report.write(result, args.out)
    print(json.dumps(result, indent=2) if args.json else onboarding_report.markdown(result))
    return 0
