"""``movierec evaluate reasons``: do the served "because you liked X" reasons agree with
co-rating? (issue 33)

For every test user of the per-user split (``recbole``), the user-id path's top
``--top`` movies are computed as served (:class:`movierec.evaluation.serving.PathScorers`,
the catalog's training part as history, seen movies excluded), and each gets the
reason the stack serves: the first movie of the item's row in the artifact's reasons
table (:mod:`movierec.models.reasons`) that the user liked (rated >= 4 anywhere in
the history), picked with the retriever's own :func:`~movierec.models.reasons.pick_reason`.
The rule served before (the liked movie, among the user's 50 newest ratings, whose
PinSage vector has the largest cosine to the item after centring the page's vectors)
is scored beside it.

The reference is item-to-item cosine over the *training* ratings >= 4: for an item, the
user's liked movies ordered by their cosine to it. Reported per rule:

* ``top1``/``top3``: the reason is the user's most / one of the three most co-liked
  movies for the item, over items for which some liked movie has a positive cosine (an
  item left without a "because you liked" reason counts as a miss);
* ``series``: over items of a series (same title key) the user liked a film of, the
  reason is a film of that series;
* ``coverage``: items that get a "because you liked" reason at all.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from movierec.data.source import load_dataset
from movierec.data.splits import training_ratings
from movierec.evaluation import artifacts, protocols
from movierec.evaluation.serving import ItemSpace, PathScorers, ServedModels
from movierec.models import reasons, registry
from movierec.models.artifact import read_item_vectors
from movierec.models.user_input import newest_first

OLD_ANCHORS = 50
RULES = ("served", "before")


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=("recbole",), default="recbole")
    for model in registry.NAMES:
        parser.add_argument(f"--{model}", default=None,
                            help=f"{model} artifact (default: latest)")
    parser.add_argument("--top", type=int, default=10, help="recommended movies per user")
    parser.add_argument("--users", type=int, default=0,
                        help="evaluate this many test users (seeded sample; 0: all)")


@dataclass
class Tally:
    """Counts behind the reported fractions of one rule."""

    items: int = 0
    explained: int = 0
    related: int = 0
    top1: int = 0
    top3: int = 0
    series_items: int = 0
    series_named: int = 0

    def add(self, reason: int, ranked: list[int], series_mates: set[int]) -> None:
        self.items += 1
        self.explained += reason > 0
        if ranked:
            self.related += 1
            self.top1 += reason == ranked[0]
            self.top3 += reason in ranked[:3]
        if series_mates:
            self.series_items += 1
            self.series_named += reason in series_mates

    def summary(self) -> dict:
        share = lambda a, b: round(a / b, 4) if b else None  # noqa: E731
        return {"items": self.items, "coverage": share(self.explained, self.items),
                "top1": share(self.top1, self.related), "top3": share(self.top3, self.related),
                "series": share(self.series_named, self.series_items),
                "series_items": self.series_items, "related_items": self.related}


@dataclass
class Reference:
    """Item-to-item cosine of the training ratings >= 4, and every movie's series."""

    movie_ids: np.ndarray
    cosine: np.ndarray                   # dense (movies, movies)
    series: np.ndarray                   # series number per movie (-1: none)
    column: dict[int, int] = field(default_factory=dict)

    @classmethod
    def build(cls, ratings: pd.DataFrame, movies: pd.DataFrame) -> Reference:
        ordered = movies.sort_values("movie_id")
        ids = ordered["movie_id"].to_numpy(np.int64)
        matrix = reasons.liked_matrix(ratings, ids)
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        cosine = (matrix @ matrix.T).toarray()
        cosine /= np.maximum(np.outer(norms, norms), 1e-12)
        np.fill_diagonal(cosine, 0.0)
        return cls(ids, cosine.astype(np.float32), reasons.series_of(ordered["title"].tolist()),
                   {int(m): i for i, m in enumerate(ids)})

    def ranked(self, item: int, liked: list[int]) -> list[int]:
        """The liked movies with a positive cosine to ``item``, most co-liked first."""
        row = self.cosine[self.column[item]]
        sims = [(float(row[self.column[m]]), m) for m in liked if m in self.column]
        return [m for s, m in sorted(sims, key=lambda p: (-p[0], p[1])) if s > 0]

    def series_mates(self, item: int, liked: list[int]) -> set[int]:
        number = self.series[self.column[item]]
        if number < 0:
            return set()
        return {m for m in liked if m in self.column and self.series[self.column[m]] == number}


def before_rule(page: list[int], anchors: list[int], items: ItemSpace,
                column: dict[int, int]) -> dict[int, int]:
    """The reason served before: the anchor with the largest cosine to each page movie
    after centring the vectors of the page and the anchors on their mean."""
    known = [a for a in anchors if a in column and items.known[column[a]]]
    if not known:
        return {}
    ids = list(dict.fromkeys(page + known))
    matrix = np.stack([items.vectors[column[i]] for i in ids]).astype(np.float32)
    matrix -= matrix.mean(axis=0)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    rows = {m: r for r, m in enumerate(ids)}
    similarity = matrix @ matrix[[rows[a] for a in known]].T
    return {m: known[int(np.argmax(similarity[rows[m]]))] for m in page}


def evaluate(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    data = load_dataset(args.dataset, args.data_dir)
    split_name = protocols.split_for(args.protocol)
    paths = {m: artifacts.resolve(getattr(args, m), m, args.artifacts) for m in registry.NAMES}
    metas = [artifacts.check(p, data, split_name, f"movierec train {m}")
             for m, p in paths.items()]
    built = protocols.build(data, args.protocol, artifacts.common_seed(metas))
    served = paths[registry.for_input("history").name]   # the user-id path's model
    table = reasons.load(served)
    if table is None:
        raise SystemExit(f"{served} has no reasons table; retrain it")
    ids, _ = read_item_vectors(served)
    rows_of = dict(zip(ids.tolist(), table, strict=True))
    models = ServedModels.load(paths, built.movie_ids)
    reference = Reference.build(training_ratings(data, built.split), data.movies)
    tallies = score_users(args, built, models, rows_of, reference, data.users)
    result = {"dataset": data.name, "protocol": args.protocol, "top": args.top,
              "artifact": str(served),
              "rules": {rule: tally.summary() for rule, tally in tallies.items()},
              "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(result, indent=2) if args.json else _table(result))
    return 0


def score_users(args, built, models, rows_of, reference, users) -> dict[str, Tally]:
    task = built.test
    rows = task.rows
    if args.users:
        rows = np.sort(np.random.default_rng(0).choice(rows, min(args.users, len(rows)),
                                                       replace=False))
    scorer = PathScorers(models, built, users).user_id(task)
    frame = newest_first(task.history_frame)
    histories = {u: g for u, g in frame.groupby("user_id", sort=False)}
    column = {int(m): i for i, m in enumerate(task.movie_ids)}
    tallies = {rule: Tally() for rule in RULES}
    for start in range(0, len(rows), 256):
        chunk = rows[start:start + 256]
        scores = scorer(chunk)
        for row, line in zip(chunk, scores, strict=True):
            history = histories.get(int(task.user_ids[row]))
            if history is None:
                continue
            page = [int(task.movie_ids[c]) for c in np.argsort(-line)[:args.top + 10]]
            _score_page(page[:args.top], page, history, rows_of, reference, models,
                        column, tallies)
    return tallies


def _score_page(top, page, history, rows_of, reference, models, column, tallies) -> None:
    liked = history.loc[history["rating"] >= reasons.LIKED, "movie_id"].astype(int).tolist()
    liked_set = set(liked)
    old = before_rule(page, history["movie_id"].astype(int).tolist()[:OLD_ANCHORS],
                      models.serving("history")[1], column)
    for item in top:
        ranked = reference.ranked(item, liked)
        mates = reference.series_mates(item, liked)
        served = reasons.pick_reason(rows_of.get(item, ()), liked_set)
        tallies["served"].add(served, ranked, mates)
        tallies["before"].add(old.get(item, 0), ranked, mates)   # rated, maybe not liked


def _table(result: dict) -> str:
    lines = [f"reasons on {result['dataset']} {result['protocol']} test users, top "
             f"{result['top']} of the user-id path ({result['seconds']} s)",
             f"{'rule':8s} {'top1':>7s} {'top3':>7s} {'series':>7s} {'coverage':>9s} "
             f"{'items':>7s} {'series items':>13s}"]
    for rule, s in result["rules"].items():
        lines.append(f"{rule:8s} {s['top1']:7.3f} {s['top3']:7.3f} {s['series'] or 0:7.3f} "
                     f"{s['coverage']:9.3f} {s['items']:7d} {s['series_items']:13d}")
    return "\n".join(lines)
