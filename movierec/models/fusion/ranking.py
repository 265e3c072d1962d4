"""The ranking objective of the fusion model: softmax over all movies.

Targets are the movies users liked (rating >= ``rank_min_rating``): per user
(:class:`RankTargets`, trained with the user's id) and pooled per profile
(:class:`ProfileTargets`: gender, age bucket, occupation with the id hidden, i.e. the
cold-start path, weighted by the profile's share of all likes). :func:`rank_loss` is
the cross entropy of the model's ranking scores
(:meth:`~movierec.models.fusion.model.FusionModel.rank_logits`) against both, over
every movie of the catalog. :func:`cell_likes` counts likes per movie and gender x age
cell, from which the ranking biases start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from movierec.compat.paddle import paddle
from movierec.models.fusion.data import Tables
from movierec.models.fusion.features import (
    AGE_CODES,
    CELLS,
    UNKNOWN,
    UserFeatures,
    cell_features,
)
from movierec.models.fusion.model import FusionModel

F = paddle.nn.functional


@dataclass
class RankTargets:
    """Each training user's liked movies (the ranking loss's targets), CSR-like.

    ``users`` are user table rows; the movie table rows liked by ``users[k]`` are
    ``movies[starts[k]:starts[k + 1]]``.
    """

    users: np.ndarray
    starts: np.ndarray
    movies: np.ndarray
    num_movies: int

    def __len__(self) -> int:
        return len(self.users)

    def chunks(self, rng: np.random.Generator, size: int, at_most: int) -> list[np.ndarray]:
        """A shuffled partition of the users into about ``size``-user chunks (at most
        ``at_most`` chunks)."""
        count = min(max(at_most, 1), max(-(-len(self) // max(size, 1)), 1))
        return np.array_split(rng.permutation(len(self)), count)

    def labels(self, chunk: np.ndarray) -> np.ndarray:
        """``[len(chunk), num_movies]``: each user's liked movies, as a distribution."""
        out = np.zeros((len(chunk), self.num_movies), dtype=np.float32)
        for row, k in enumerate(chunk):
            liked = self.movies[self.starts[k]:self.starts[k + 1]]
            out[row, liked] = 1.0 / len(liked)
        return out


def rank_targets(tables: Tables, frame, min_rating: float) -> RankTargets:
    """Liked movies (ratings >= ``min_rating``) of every user of a ratings frame."""
    liked = frame[frame["rating"] >= min_rating]
    users = tables.user_rows(liked["user_id"].to_numpy().astype(np.int64))
    movies = tables.movie_rows(liked["movie_id"].to_numpy().astype(np.int64))
    order = np.lexsort((movies, users))
    users, movies = users[order], movies[order]
    distinct, starts = np.unique(users, return_index=True)
    return RankTargets(distinct, np.append(starts, len(users)), movies,
                       len(tables.movie_ids))


@dataclass
class ProfileTargets:
    """Liked movies pooled per profile (gender, age bucket, occupation) of the users of
    :class:`RankTargets`: the cold-start (profile) path's ranking targets.

    ``users`` has one row per profile, with the unknown user id; ``labels`` rows are the
    profile's distribution of liked movies; ``weights`` the profile's share of all likes.
    """

    users: UserFeatures
    labels: np.ndarray
    weights: np.ndarray


def profile_targets(tables: Tables, targets: RankTargets) -> ProfileTargets:
    """Pool ``targets`` by profile."""
    feats = tables.users.take(targets.users)
    profiles, first, inverse = np.unique(np.stack([feats.gender, feats.age, feats.occupation], 1),
                                         axis=0, return_index=True, return_inverse=True)
    counts = np.zeros((len(profiles), targets.num_movies), dtype=np.float32)
    np.add.at(counts, (np.repeat(inverse.ravel(), np.diff(targets.starts)), targets.movies), 1.0)
    users = feats.take(first)
    users.uid = np.full_like(users.uid, UNKNOWN)
    totals = counts.sum(axis=1)
    return ProfileTargets(users, counts / totals[:, None], totals / totals.sum())


def cell_likes(tables: Tables, targets: RankTargets) -> np.ndarray:
    """``[movie id index, gender x age cell]`` counts of ``targets``' likes."""
    users = tables.users.take(np.repeat(targets.users, np.diff(targets.starts)))
    mids = tables.movies.mid[targets.movies]
    out = np.zeros((int(tables.movies.mid.max()) + 1, CELLS), dtype=np.float64)
    np.add.at(out, (mids, users.gender * len(AGE_CODES) + users.age), 1.0)
    return out


def catalog_inputs(tables: Tables) -> list[paddle.Tensor]:
    """Movie-tower inputs of every movie of the tables (the ranking loss's candidates)."""
    movies = tables.movies
    return [paddle.to_tensor(a) for a in (movies.mid, movies.genres, tables.windows)]


def _user_inputs(users: UserFeatures) -> list[paddle.Tensor]:
    return [paddle.to_tensor(a) for a in (users.uid, users.gender, users.age, users.occupation)]


def rank_loss(model: FusionModel, tables: Tables, targets: RankTargets, chunk: np.ndarray,
              profiles: ProfileTargets, catalog: list[paddle.Tensor],
              shard: tuple[int, int] = (0, 1)) -> paddle.Tensor:
    """Softmax over all movies: cross entropy against the liked movies of each user of
    ``chunk`` (with their id, users weighted equally) plus cross entropy against each
    profile's pooled likes (id hidden, profiles weighted by their number of likes).

    ``shard = (rank, world)``: only every ``world``-th user and profile from ``rank`` on,
    weighted ``world`` times, so the mean over the ranks' losses is the whole loss."""
    rank, world = shard
    users_part, profiles_part = chunk[rank::world], np.arange(len(profiles.weights))[rank::world]
    parts = [(tables.users.take(targets.users[users_part]), targets.labels(users_part),
              np.full(len(users_part), world / len(chunk))),
             (profiles.users.take(profiles_part), profiles.labels[profiles_part],
              profiles.weights[profiles_part] * world)]
    parts = [part for part in parts if len(part[2])]
    users = paddle.concat([model.user(*_user_inputs(f)) for f, _, _ in parts])
    cells = np.concatenate([cell_features(f.gender, f.age) for f, _, _ in parts])
    known = np.concatenate([(f.uid != UNKNOWN).astype(np.int64) for f, _, _ in parts])
    logits = model.rank_logits(users, paddle.to_tensor(known), paddle.to_tensor(cells),
                               model.movie(*catalog), catalog[0])
    labels = np.concatenate([labels for _, labels, _ in parts])
    weights = np.concatenate([weights for _, _, weights in parts])
    per_row = F.cross_entropy(logits, paddle.to_tensor(labels), soft_label=True,
                              reduction="none")
    return paddle.sum(paddle.reshape(per_row, [-1]) * paddle.to_tensor(weights, "float32"))


@dataclass
class Ranker:
    """The ranking objective of one training run: training and validation targets.

    Every epoch visits each training user once, in chunks of about ``chunk_size`` users
    spread evenly over the epoch's rating batches (:meth:`schedule`); each chunk's loss
    also includes every profile.
    """

    tables: Tables
    fit: RankTargets
    profiles: ProfileTargets
    valid: RankTargets
    valid_profiles: ProfileTargets
    chunk_size: int

    @classmethod
    def build(cls, tables: Tables, fit, valid, min_rating: float, chunk_size: int) -> Ranker:
        """Targets from the ``fit`` and ``valid`` ratings frames (built once per run)."""
        targets, held_out = (rank_targets(tables, fit, min_rating),
                             rank_targets(tables, valid, min_rating))
        return cls(tables, targets, profile_targets(tables, targets), held_out,
                   profile_targets(tables, held_out), chunk_size)

    def schedule(self, steps: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
        """Batch number -> the user chunk whose ranking loss that batch adds."""
        chunks = self.fit.chunks(rng, self.chunk_size, steps)
        return {j * steps // len(chunks): chunk for j, chunk in enumerate(chunks)}

    def loss(self, model: FusionModel, chunk: np.ndarray, catalog: list[paddle.Tensor],
             shard: tuple[int, int] = (0, 1)) -> paddle.Tensor:
        """The training loss of ``chunk`` (``shard``: this rank's part, see :func:`rank_loss`)."""
        return rank_loss(model, self.tables, self.fit, chunk, self.profiles, catalog, shard)

    @paddle.no_grad()
    def valid_loss(self, model: FusionModel) -> float:
        """The ranking loss over all validation users and profiles (eval mode)."""
        model.eval()
        return float(rank_loss(model, self.tables, self.valid, np.arange(len(self.valid)),
                               self.valid_profiles, catalog_inputs(self.tables)))
