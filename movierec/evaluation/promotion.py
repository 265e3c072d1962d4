"""Is a retrained model better than the one serving? Both scored on one temporal holdout.

The champion (the serving artifacts) and the challenger (trained on a snapshot's
``time_80_10_10`` split) are scored exactly as served (:mod:`movierec.evaluation.serving`)
on the snapshot's ``temporal`` protocol: each test user's newest ratings are the targets,
everything before them the history. Each model is judged on the path it serves: fusion
on profiles, PinSage on known users' histories. The challenger is refused when its
NDCG@10 on either path falls more than ``tolerance`` below the champion's. The champion
may have seen some of the holdout in its own training (it was trained earlier, on other
data): that can only favour it, so a promotion is never the result of a leak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from movierec.data.movielens import MovieLens, profiled
from movierec.evaluation import protocols, runner
from movierec.evaluation.serving import PathScorers, ServedModels

#: the served path each model is judged on
JUDGED = {"fusion": "profile", "pinsage": "user_id"}
METRIC = "ndcg@10"
PROTOCOL = "temporal"


@dataclass
class Verdict:
    """Scores of both sides per path, and whether the challenger may serve."""

    rows: dict[str, dict[str, dict]]        # side -> path -> result row
    tolerance: float
    refused: list[str] = field(default_factory=list)   # why not, one line per path

    @property
    def promote(self) -> bool:
        return not self.refused

    def table(self) -> str:
        lines = [f"{'path':10s} {'champion':>10s} {'challenger':>11s}   ({METRIC}, "
                 f"{PROTOCOL} holdout test)"]
        for path in JUDGED.values():
            champ = self.rows.get("champion", {}).get(path, {}).get(METRIC)
            chall = self.rows["challenger"][path][METRIC]
            lines.append(f"{path:10s} {'-' if champ is None else f'{champ:.4f}':>10s} "
                         f"{chall:11.4f}")
        return "\n".join(lines)


def score(data: MovieLens, built: protocols.ProtocolData, paths: dict[str, Path]) -> dict:
    """The judged paths of one side, as served."""
    models = ServedModels.load(paths["fusion"], paths["pinsage"], built.movie_ids)
    factories = PathScorers(models, built, data.users).factories(tuple(JUDGED.values()))
    return {path: runner.measure(factory, built) for path, factory in factories.items()}


def compare(data: MovieLens, champion: dict[str, Path] | None, challenger: dict[str, Path],
            seed: int, tolerance: float = 0.005) -> Verdict:
    """Score both sides on ``data``'s temporal holdout; no champion: nothing to beat.
    Users without a profile (a snapshot keeps their ratings) are left out: the profile
    path could not serve them."""
    data = profiled(data)
    built = protocols.build(data, PROTOCOL, seed)
    rows = {"challenger": score(data, built, challenger)}
    verdict = Verdict(rows, tolerance)
    if champion is None:
        return verdict
    rows["champion"] = score(data, built, champion)
    for model, path in JUDGED.items():
        old, new = rows["champion"][path][METRIC], rows["challenger"][path][METRIC]
        if new < old - tolerance:
            verdict.refused.append(f"{model}: {path} {METRIC} {new:.4f} is below the "
                                   f"serving {old:.4f} by more than {tolerance:g}")
    return verdict
