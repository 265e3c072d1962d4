"""Writing and reading fusion artifacts (see :mod:`movierec.models.artifact`).

Files of one version, besides ``metadata.json``, ``item_ids.npy`` and
``item_vectors.npy`` (every movie of the movies file, rated or not):

* ``model.pdparams``: the Paddle state dict; ``config.json``: the
  :class:`FusionConfig` plus the vocabulary sizes needed to rebuild the network;
* ``vocab.json``: user/movie id maps, title words, genres;
* ``user_tower.npz``: the user tower's weights as numpy arrays, so the embedder can
  encode profiles without importing Paddle (:mod:`movierec.models.fusion.inference`).

Vectors (``dim = hidden + CELLS + 1``, not unit length): an item is
``[unit movie-tower output, its bias in each gender x age cell, its bias]``, a user
``[rank_scale * unit user-tower output, one-hot gender x age cell, 1]`` (``rank_scale``:
``[profile path, known user id]``), so their inner
product is the model's ranking score (what Milvus ranks by). Stars:
``clip(offset + scale * cos, 1, 5)`` with ``cos`` the cosine of the first ``hidden``
components (:func:`~movierec.models.fusion.inference.predicted_stars`); ``scale``,
``offset`` and ``rank_scale`` are in ``metadata["score"]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from movierec.compat.paddle import paddle
from movierec.data.movielens import MovieLens
from movierec.models import content
from movierec.models.artifact import ArtifactWriter, normalize
from movierec.models.fusion.data import Tables, build_tables
from movierec.models.fusion.features import CELLS, Vocab
from movierec.models.fusion.model import FusionConfig, FusionModel

MODEL_NAME = "fusion"
USER_TOWER_PREFIX = "user."
RANKING = ("score = dot(user_vector, item_vector) = rank_scale * cos(user, movie) + "
           "cell_bias[cell] + bias; user_vector = [rank_scale * unit user tower, one-hot "
           "gender x age cell, 1], item_vector = [unit movie tower, cell_bias, bias]")
FORMULA = ("stars = clip(offset + scale * dot(u[:h], i[:h]) / norm(u[:h]), 1, 5) with "
           "h = dim - cells - 1 (u, i = user and item vector)")


@paddle.no_grad()
def movie_vectors(model: FusionModel, tables: Tables, batch_size: int = 4096) -> np.ndarray:
    """Exported item vectors: ``[unit movie-tower output, biases per cell, bias]`` for every
    row of ``tables.movies``."""
    model.eval()
    movies, out, bias = tables.movies, [], []
    for start in range(0, len(movies.mid), batch_size):
        rows = np.arange(start, min(start + batch_size, len(movies.mid)))
        part = movies.take(rows)
        mid = paddle.to_tensor(part.mid)
        out.append(model.movie(mid, paddle.to_tensor(part.genres),
                               paddle.to_tensor(tables.windows[rows])).numpy())
        bias.append(model.item_bias(mid).numpy())
    return np.concatenate([normalize(np.concatenate(out)), np.concatenate(bias)], axis=1)


def user_tower_arrays(model: FusionModel) -> dict[str, np.ndarray]:
    """The user tower's parameters by state-dict name (without the ``user.`` prefix)."""
    return {name[len(USER_TOWER_PREFIX):]: value.numpy()
            for name, value in model.state_dict().items() if name.startswith(USER_TOWER_PREFIX)}


def score_map(model: FusionModel) -> dict[str, Any]:
    return {"scale": model.scale.item(), "offset": model.offset.item(), "clip": [1.0, 5.0],
            "rank_scale": model.rank_scale.numpy().tolist(), "cells": CELLS, "ranking": RANKING,
            "formula": FORMULA}


def export(model: FusionModel, cfg: FusionConfig, vocab: Vocab, data: MovieLens,
           metadata: dict[str, Any], root: Path | None = None,
           reasons: np.ndarray | None = None) -> Path:
    """Publish a new fusion version; returns its directory. ``reasons``:
    :func:`movierec.models.reasons.for_movies` of the training ratings."""
    writer = ArtifactWriter(MODEL_NAME, root)
    try:
        tables = build_tables(vocab, data, cfg.window)
        paddle.save(model.state_dict(), str(writer.path / "model.pdparams"))
        config = {"config": cfg.to_dict(), "num_users": vocab.num_users,
                  "num_movies": vocab.num_movies, "num_genres": len(vocab.genres),
                  "num_words": vocab.num_words}
        (writer.path / "config.json").write_text(json.dumps(config, indent=2))
        vocab.save(writer.path / "vocab.json")
        np.savez(writer.path / "user_tower.npz", **user_tower_arrays(model))
        meta = {"dataset": data.name, "data_checksum": data.checksum,
                "score": score_map(model), "params": cfg.to_dict(), **metadata}
        vectors = movie_vectors(model, tables)
        trained = np.isin(tables.movie_ids, np.asarray(vocab.movie_ids, dtype=np.int64))
        return writer.finish(meta, tables.movie_ids, vectors, unit=False, reasons=reasons,
                             content=content.for_movies(data.movies, tables.movie_ids, vectors,
                                                        trained, vocab.genres),
                             movies=data.movies)
    except BaseException:
        writer.abort()
        raise


def load_model(path: Path) -> tuple[FusionModel, FusionConfig, Vocab]:
    """Rebuild the Paddle network of an artifact version (in eval mode)."""
    config = json.loads((path / "config.json").read_text())
    cfg = FusionConfig.from_dict(config["config"])
    model = FusionModel(cfg, config["num_users"], config["num_movies"], config["num_genres"],
                        config["num_words"])
    model.set_state_dict(paddle.load(str(path / "model.pdparams")))
    model.eval()
    return model, cfg, Vocab.load(path / "vocab.json")
