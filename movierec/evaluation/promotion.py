"""Is a retrained model better than the one serving? Both scored on one temporal holdout.

The champion (the serving artifacts) and the challenger (trained on a snapshot's
``time_80_10_10`` split) are scored exactly as served (:mod:`movierec.evaluation.serving`)
on the snapshot's ``temporal`` protocol, limited to what neither has seen: the targets
are the holdout's ratings newer than the newest rating the champion trained on (its
artifacts record ``trained_through``), everything before them the history. Each model
is judged on the path it serves (:data:`JUDGED`: fusion on profiles, the history model
on known users' histories, a liked-only model on liked lists).
The challenger is refused when its NDCG@10 on either path falls more than ``tolerance``
below the champion's, and when too few users have unseen ratings to compare at all
(``movierec retrain --allow-unjudged`` promotes then, on the challenger's own
validation).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from movierec.data.movielens import MovieLens, profiled
from movierec.evaluation import protocols, runner
from movierec.evaluation.ranking import make_task
from movierec.evaluation.serving import PathScorers, ServedModels
from movierec.models import registry
from movierec.models.artifact import read_metadata

#: the served path that judges a model embedding each input, most telling first
PATH_OF_INPUT = {"history": "user_id", "sequence": "next", "profile": "profile",
                 "liked": "liked"}
#: the served path each registered model is judged on: its main input's
JUDGED = {m.name: PATH_OF_INPUT[m.main_input] for m in registry.MODELS}
METRIC = "ndcg@10"
PROTOCOL = "temporal"
MIN_USERS = 50


@dataclass
class Verdict:
    """Scores of both sides per path, and whether the challenger may serve."""

    rows: dict[str, dict[str, dict]]        # side -> path -> result row
    tolerance: float
    unjudged: int | None = None             # too few unseen users to compare: their count
    refused: list[str] = field(default_factory=list)   # why not, one line per path

    @property
    def promote(self) -> bool:
        return not self.refused

    def table(self) -> str:
        if self.unjudged is not None:
            return f"no comparison: {self.unjudged} users with unseen holdout ratings"
        users = next(iter(self.rows["challenger"].values()))["users"]
        lines = [f"{'path':10s} {'champion':>10s} {'challenger':>11s}   ({METRIC}, "
                 f"{PROTOCOL} holdout ratings newer than the champion's data, "
                 f"{int(users)} users)"]
        for path in JUDGED.values():
            champ = self.rows.get("champion", {}).get(path, {}).get(METRIC)
            chall = self.rows["challenger"][path][METRIC]
            lines.append(f"{path:10s} {'-' if champ is None else f'{champ:.4f}':>10s} "
                         f"{chall:11.4f}")
        return "\n".join(lines)


def unseen(built: protocols.ProtocolData, cut: int) -> protocols.ProtocolData:
    """The protocol with its test targets limited to ratings after ``cut`` (what the
    champion never saw); the test ratings up to ``cut`` join the users' history."""
    split = built.split
    newer = split.test["timestamp"] > cut
    seen, later = split.test[~newer], split.test[newer]
    history = [split.train, split.valid, seen]
    test = make_task(built.user_ids, built.movie_ids, history, history,
                     protocols.relevant(later, protocols.MIN_RATING[PROTOCOL]),
                     built.test.percentiles)
    return replace(built, test=test)


def score(data: MovieLens, built: protocols.ProtocolData, paths: dict[str, Path]) -> dict:
    """The judged paths of one side, as served."""
    models = ServedModels.load(paths, built.movie_ids)
    factories = PathScorers(models, built, data.users).factories(tuple(JUDGED.values()))
    return {path: runner.measure(factory, built) for path, factory in factories.items()}


def champion_cut(champion: dict[str, Path]) -> int | None:
    """The newest rating time any champion model trained on (None: not recorded, an
    artifact older than this rule: it may have seen anything)."""
    times = [read_metadata(path).get("trained_through") for path in champion.values()]
    return None if any(t is None for t in times) else max(int(t) for t in times)


def compare(data: MovieLens, champion: dict[str, Path] | None, challenger: dict[str, Path],
            seed: int, tolerance: float = 0.005, min_users: int = MIN_USERS) -> Verdict:
    """Score both sides on ``data``'s temporal holdout; no champion: nothing to beat.

    Both are judged only on holdout ratings newer than anything the champion trained
    on: a champion evaluated on its own training ratings would always look better. When
    fewer than ``min_users`` users have such ratings (a catalog bootstrapped from the very
    files the champion learned, before users rated anything new) the verdict is
    *unjudged*. Users without a profile (a snapshot keeps their ratings) are left out:
    the profile path could not serve them."""
    data = profiled(data)
    built = protocols.build(data, PROTOCOL, seed)
    if champion is None:
        return Verdict({"challenger": score(data, built, challenger)}, tolerance)
    cut = champion_cut(champion)
    built = unseen(built, int(data.ratings["timestamp"].max()) if cut is None else cut)
    users = int(built.test.rows.size)
    if users < min_users:
        verdict = Verdict({"challenger": {}}, tolerance, unjudged=users)
        verdict.refused.append(f"only {users} users rated anything after the serving models' "
                               f"training data (at least {min_users} needed to compare)")
        return verdict
    rows = {"challenger": score(data, built, challenger), "champion": score(data, built,
                                                                             champion)}
    verdict = Verdict(rows, tolerance)
    for model, path in JUDGED.items():
        old, new = rows["champion"][path][METRIC], rows["challenger"][path][METRIC]
        if new < old - tolerance:
            verdict.refused.append(f"{model}: {path} {METRIC} {new:.4f} is below the "
                                   f"serving {old:.4f} by more than {tolerance:g}")
    return verdict
