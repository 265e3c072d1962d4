"""The served recommendation paths, scored exactly as the embedder and retriever serve them.

User vectors come from the encoders' public API on the exported artifacts
(``FusionEncoder.encode``, ``PinSageEncoder.embed_liked``, and for known users
:func:`movierec.models.user_input.embed_user_history`, the embedder's own history
selection); a movie's score is the inner product of the user vector with the
artifact's exported item vector, which is what Milvus (metric IP) computes; movies
without an exported vector are never retrieved. Exact search stands in for Milvus.

* ``profile``: gender, age (bucket -> years as the embedder maps it), occupation; no id.
* ``profile_user``: the same with the user id (a user unknown to the model gets the
  model's unknown-id slot, as served).
* ``liked``: the user's history movie ids with weight 1 each; liked ids excluded.
* ``user_id``: what ``EmbedHistory`` does with the user's catalog history (newest
  ``history_limit``, the artifact's rating weights), seen movies excluded; a user
  without history gets the profile vector with id, else the most popular movies.

The catalog history is the task's history (the ``recbole_811`` training part, which is
what ``make run`` loads; the given movies with their stars for cold-start users).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.evaluation.baselines import Factory, item_counts
from movierec.evaluation.protocols import ProtocolData
from movierec.evaluation.ranking import RankingTask, Scorer
from movierec.models import registry
from movierec.models.artifact import read_item_vectors
from movierec.models.fusion.inference import FusionEncoder
from movierec.models.pinsage.encoder import PinSageEncoder
from movierec.models.user_input import (
    DEFAULT_HISTORY_LIMIT,
    History,
    catalog_profile,
    embed_user_history,
    newest_first,
    oldest_first,
)

PATHS = ("profile", "profile_user", "liked", "user_id", "next")


@dataclass(frozen=True)
class ItemSpace:
    """An artifact's exported item vectors aligned to the task's movie columns."""

    vectors: np.ndarray  # (movies, dim), zero rows where the artifact has no vector
    known: np.ndarray    # bool (movies,)

    @classmethod
    def load(cls, path: Path, movie_ids: np.ndarray) -> ItemSpace:
        ids, vectors = read_item_vectors(path)
        return cls.align(ids, vectors, movie_ids)

    @classmethod
    def align(cls, ids: np.ndarray, vectors: np.ndarray, movie_ids: np.ndarray) -> ItemSpace:
        order = np.argsort(ids, kind="stable")
        ids, vectors = np.asarray(ids)[order], np.asarray(vectors, np.float32)[order]
        pos = np.clip(np.searchsorted(ids, movie_ids), 0, len(ids) - 1)
        known = ids[pos] == movie_ids
        aligned = np.where(known[:, None], vectors[pos], 0.0).astype(np.float32)
        return cls(aligned, known)

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Inner products of user vectors with every movie (-inf: no exported vector)."""
        out = np.asarray(users, np.float32) @ self.vectors.T
        out[:, ~self.known] = -np.inf
        return out


@dataclass
class ServedModels:
    """Every registered model's artifact as the embedder loads it, by model name."""

    encoders: dict[str, object]
    items: dict[str, ItemSpace]
    history_limit: int = DEFAULT_HISTORY_LIMIT

    @classmethod
    def load(cls, paths: dict[str, Path], movie_ids: np.ndarray,
             history_limit: int = DEFAULT_HISTORY_LIMIT) -> ServedModels:
        return cls({m: registry.encoder_class(m).load(p) for m, p in paths.items()},
                   {m: ItemSpace.load(p, movie_ids) for m, p in paths.items()}, history_limit)

    def serving(self, kind: str) -> tuple[object, ItemSpace]:
        """(encoder, item space) of the model the registry says embeds ``kind``."""
        name = registry.for_input(kind).name
        return self.encoders[name], self.items[name]

    @property
    def fusion(self) -> FusionEncoder:
        return self.serving("profile")[0]


@dataclass(frozen=True)
class _Rating:
    movie_id: int
    rating: float
    timestamp: int


def _history_lists(task: RankingTask, rows: np.ndarray) -> dict[int, list[_Rating]]:
    """Each row's catalog history as rating records, in the catalog's order."""
    frame = task.history_frame
    wanted = set(task.user_ids[rows].tolist())
    frame = newest_first(frame[frame["user_id"].isin(wanted)])
    out: dict[int, list[_Rating]] = {}
    for user, movie, rating, stamp in frame[["user_id", "movie_id", "rating",
                                             "timestamp"]].itertuples(index=False):
        out.setdefault(int(user), []).append(_Rating(int(movie), float(rating), int(stamp)))
    return out


class PathScorers:
    """Factories of the served paths for one protocol's tasks."""

    def __init__(self, models: ServedModels, data: ProtocolData, users: pd.DataFrame) -> None:
        self.m, self.data = models, data
        self.users = users.set_index("user_id").reindex(data.user_ids)
        self.popular = item_counts(data.train).astype(np.float32)

    def factories(self, paths: tuple[str, ...] = PATHS) -> dict[str, Factory]:
        table = {"profile": self.profile, "profile_user": self.profile_user,
                 "liked": self.liked, "user_id": self.user_id, "next": self.next}
        return {name: table[name] for name in paths}

    def _profiles(self, rows: np.ndarray, with_id: bool) -> np.ndarray:
        found = self.users.iloc[rows]
        profiles = [catalog_profile(int(age), str(gender), int(job), int(uid) if with_id else None)
                    for uid, gender, age, job in zip(found.index, found["gender"], found["age"],
                                                     found["occupation"], strict=True)]
        return self.m.fusion.encode(profiles)

    def profile(self, task: RankingTask) -> Scorer:
        items = self.m.serving("profile")[1]
        return lambda rows: items.scores(self._profiles(rows, with_id=False))

    def profile_user(self, task: RankingTask) -> Scorer:
        items = self.m.serving("profile")[1]
        return lambda rows: items.scores(self._profiles(rows, with_id=True))

    def liked(self, task: RankingTask) -> Scorer:
        encoder, items = self.m.serving("liked")
        lists = _ordered_lists(task)

        def score(rows: np.ndarray) -> np.ndarray:
            vectors = np.zeros((len(rows), encoder.dim), np.float32)
            for i, r in enumerate(rows):
                liked = lists.get(int(task.user_ids[r]), [])
                vectors[i] = encoder.embed_liked(liked) if liked else 0.0
            scores = items.scores(vectors)
            empty = np.diff(task.history[rows].indptr) == 0  # not servable: popular instead
            scores[empty] = self.popular
            return _exclude(scores, task, rows)
        return score

    def user_id(self, task: RankingTask, kind: str = "history") -> Scorer:
        def score(rows: np.ndarray) -> np.ndarray:
            histories = _history_lists(task, rows)
            out = np.empty((len(rows), len(task.movie_ids)), np.float32)
            for i, r in enumerate(rows):
                out[i] = self._one_user(int(r), histories.get(int(task.user_ids[r]), []),
                                        kind)
            return _exclude(out, task, rows)
        return score

    def next(self, task: RankingTask) -> Scorer:
        """``Recommend{next_for_user_id}``: the same history, the sequence model."""
        return self.user_id(task, "sequence")

    def _one_user(self, row: int, history: list[_Rating], kind: str) -> np.ndarray:
        if history:
            encoder, items = self.m.serving(kind)
            vector, _ = embed_user_history(encoder, History.from_rows(history),
                                           self.m.history_limit)
            return items.scores(vector[None])[0]
        if not self.users.iloc[[row]]["gender"].isna().any():
            return self.m.serving("profile")[1].scores(self._profiles(np.array([row]), True))[0]
        return self.popular


def _ordered_lists(task: RankingTask) -> dict[int, list[int]]:
    """Each user's history movies as a liked list, oldest first (the catalog's
    newest-first order reversed: time ascending, ties as recorded), the order a sequence
    model reads a web user's clicks in; PinSage ignores the order."""
    frame = task.history_frame
    if frame is None:
        coo = task.history.tocoo()
        frame = pd.DataFrame({"user_id": task.user_ids[coo.row],
                              "movie_id": task.movie_ids[coo.col], "timestamp": 0})
    frame = oldest_first(frame.drop_duplicates(["user_id", "movie_id"], keep="last"))
    return {int(u): g.tolist() for u, g in frame.groupby("user_id", sort=False)["movie_id"]}


def _exclude(scores: np.ndarray, task: RankingTask, rows: np.ndarray) -> np.ndarray:
    """The gateway's exclusions: the user's history (seen or liked movies)."""
    history = task.history[rows]
    scores[np.repeat(np.arange(len(rows)), np.diff(history.indptr)), history.indices] = -np.inf
    return scores


def pinsage_history(encoder: PinSageEncoder, items: ItemSpace) -> Factory:
    """PinSage scored from each user's whole history with the artifact's rating weights."""
    def factory(task: RankingTask) -> Scorer:
        def score(rows: np.ndarray) -> np.ndarray:
            vectors = np.zeros((len(rows), encoder.dim), np.float32)
            for i, r in enumerate(rows):
                history = task.history[r]
                if history.nnz:
                    vectors[i] = encoder.embed_history(task.movie_ids[history.indices].tolist(),
                                                       history.data.tolist())
            return items.scores(vectors)
        return score
    return factory
