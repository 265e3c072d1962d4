"""``movierec evaluate new-movies``: how well movies added after training are recommended.

The item cold-start protocol of issue 27: a seeded tenth of the movies is held out of
training entirely (``movierec data holdout-movies`` writes the data set without them:
no rating, no row in movies.dat), both models are trained on the rest, and the held-out
movies then get their vectors the way a movie added through the API does — each
artifact's content map from title, year and genres (:mod:`movierec.models.content`).
For every user who liked (>= 4) a held-out movie, the held-out movies are ranked
(restricted ranking: only among them) and the ones the user liked are the targets:

* one row per registered model, on the path it serves, against its content vectors:
  the history model (SASRec) the user-id path as served (the user's ratings of the kept
  movies, the embedder's history selection); fusion the profile path with the user's
  id; PinSage the user's liked (>= 4) kept movies as a liked list;
* ``genre_pop``: a movie's score is the mean popularity of its genres (training ratings
  >= 4 per genre); ``user_genre``: the share of the user's own liked movies in the
  movie's genres (a per-user genre taste); ``random``: a seeded shuffle.

    movierec data holdout-movies --dataset ml-1m --out DIR
    movierec train MODEL --dataset ml-1m --data-dir DIR --artifacts ROOT   (every model)
    movierec evaluate new-movies --holdout DIR --artifacts ROOT --json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.data.movielens import MovieLens, bucket_years
from movierec.data.source import load_dataset
from movierec.data.splits import HELD_OUT
from movierec.evaluation.ranking import RankingTask, make_task
from movierec.evaluation.ranking import evaluate as metrics
from movierec.models import registry
from movierec.models.artifact import latest
from movierec.models.content import ContentMap
from movierec.models.fusion.inference import Profile
from movierec.models.user_input import (
    DEFAULT_HISTORY_LIMIT,
    History,
    embed_user_history,
    newest_first,
)

LIKED = 4


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--holdout", type=Path, required=True,
                        help="the folder `movierec data holdout-movies` wrote")
    parser.add_argument("--history-limit", type=int, default=DEFAULT_HISTORY_LIMIT)


def task_of(data: MovieLens, held: list[int]) -> tuple[RankingTask, pd.DataFrame]:
    """Users who liked a held-out movie; their liked held-out movies are the targets."""
    ratings = data.ratings
    targets = ratings[ratings["movie_id"].isin(held) & (ratings["rating"] >= LIKED)]
    history = ratings[~ratings["movie_id"].isin(held)]
    users = np.sort(targets["user_id"].unique())
    history = history[history["user_id"].isin(users)]
    empty = targets.iloc[:0]
    return make_task(users, np.asarray(held, np.int64), [empty], [empty], targets), history


def content_vectors(path: Path, data: MovieLens, held: list[int]) -> np.ndarray:
    """The held-out movies' vectors from the artifact's content map, as served."""
    mapped = ContentMap.load(path)
    movies = data.movies.set_index("movie_id").loc[held]
    return mapped.vectors([(t, None if y != y else int(y), tuple(g)) for t, y, g in
                           zip(movies["title"], movies["year"], movies["genres"], strict=True)])


def scorers(data: MovieLens, held: list[int], task: RankingTask, history: pd.DataFrame,
            paths: dict[str, Path], limit: int) -> dict:
    """One row per registered model, on the path it serves (the history model: the
    user-id path; the profile model: profile with id; a liked-only model: the user's
    liked kept movies), against its content vectors of the held-out movies."""
    per_user = dict(tuple(newest_first(history).groupby("user_id", sort=False)))
    users = data.users.set_index("user_id")

    def history_vectors(encoder, rows):
        return np.stack([embed_user_history(encoder, History.of(
            h["movie_id"], h["rating"], h["timestamp"]), limit)[0] for h in
            (per_user[task.user_ids[r]] for r in rows)])

    def liked_vectors(encoder, rows):
        out = []
        for r in rows:
            h = per_user[task.user_ids[r]]
            liked = h[h["rating"] >= LIKED]["movie_id"].tolist()[::-1] or h["movie_id"].tolist()
            out.append(encoder.embed_liked(liked))
        return np.stack(out)

    def profile_vectors(encoder, rows):
        found = users.loc[task.user_ids[rows]]
        return encoder.encode([Profile(bucket_years(int(a)), g, int(o), int(u)) for u, g, a, o
                               in zip(found.index, found["gender"], found["age"],
                                      found["occupation"], strict=True)])
    embed = {"history": history_vectors, "sequence": history_vectors,
             "profile": profile_vectors, "liked": liked_vectors}
    out = {}
    for model in registry.MODELS:
        kind = model.main_input
        encoder = registry.encoder_class(model.name).load(paths[model.name])
        items = content_vectors(paths[model.name], data, held)
        out[model.name] = (lambda rows, e=encoder, f=embed[kind], i=items: f(e, rows) @ i.T)
    return {**out, **genre_baselines(data, held, task, history)}


def genre_baselines(data: MovieLens, held: list[int], task: RankingTask,
                    history: pd.DataFrame) -> dict:
    genres = list(data.genres)
    movies = data.movies.set_index("movie_id")
    held_genres = np.zeros((len(held), len(genres)), np.float32)
    for i, movie in enumerate(held):
        for g in movies.loc[movie, "genres"]:
            held_genres[i, genres.index(g)] = 1.0
    held_genres /= np.maximum(held_genres.sum(axis=1, keepdims=True), 1)
    liked = history[history["rating"] >= LIKED].merge(
        data.movies[["movie_id", "genres"]], on="movie_id")
    exploded = liked.explode("genres")
    popularity = exploded["genres"].value_counts().reindex(genres).fillna(0).to_numpy()
    taste = (exploded.groupby(["user_id", "genres"]).size().unstack(fill_value=0)
             .reindex(index=task.user_ids, columns=genres, fill_value=0).to_numpy(np.float32))
    taste = taste / np.maximum(taste.sum(axis=1, keepdims=True), 1)
    rng = np.random.default_rng(0)
    return {"genre_pop": lambda rows: np.tile(held_genres @ popularity, (len(rows), 1)),
            "user_genre": lambda rows: taste[rows] @ held_genres.T,
            "random": lambda rows: rng.random((len(rows), len(held)))}


def evaluate_new(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    data = load_dataset(args.dataset, args.data_dir)
    held = json.loads((args.holdout / HELD_OUT).read_text())["movie_ids"]
    paths = {m: latest(m, args.artifacts) for m in registry.NAMES}
    task, history = task_of(data, held)
    rows = {name: {k: round(v, 5) for k, v in metrics(scorer, task).items()}
            for name, scorer in scorers(data, held, task, history, paths,
                                        args.history_limit).items()}
    return {"dataset": data.name, "held_out_movies": len(held),
            "users": int(len(task.user_ids)), "artifacts": {m: str(p) for m, p in paths.items()},
            "rows": rows, "seconds": round(time.perf_counter() - started, 1)}


def evaluate(args: argparse.Namespace) -> int:
    result = evaluate_new(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"new movies: {result['held_out_movies']} held out of training, "
          f"{result['users']} users who liked one; ranking among them only")
    for name, row in result["rows"].items():
        print(f"  {name:11s} recall@10 {row['recall@10']:.4f}  ndcg@10 {row['ndcg@10']:.4f}")
    return 0
