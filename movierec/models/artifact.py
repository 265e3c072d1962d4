"""Versioned model artifacts: one directory per model version, written atomically.

Layout under ``$MOVIEREC_ARTIFACTS`` (default ``./artifacts``)::

    <model>/<version>/metadata.json    model, version, dim, dataset, data checksum, metrics...
    <model>/<version>/item_ids.npy     int64 movie ids, row i of item_vectors is item_ids[i]
    <model>/<version>/item_vectors.npy float32, one row per movie; a user's score for a
                                       movie is the inner product with its row (unit rows
                                       unless the model folds extra terms, e.g. an item
                                       bias, into extra dimensions: ``normalized`` false)
    <model>/<version>/...              the model's own weights and vocabularies
    <model>/LATEST                     the name of the newest complete version

A version is built in a hidden temporary directory and renamed into place, and
``LATEST`` is replaced atomically, so readers never see a half-written version.
Servers only load artifacts; training code writes them through :class:`ArtifactWriter`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from movierec.errors import DataError, InvalidArgument
from movierec.models import reasons as reasons_file

FORMAT_VERSION = 1


def artifacts_root(root: Path | None = None) -> Path:
    return (root or Path(os.environ.get("MOVIEREC_ARTIFACTS", "artifacts"))).resolve()


def new_version() -> str:
    """A sortable UTC version name, e.g. ``20261122T190102Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)


class ArtifactWriter:
    """Collects one version's files in a temporary directory, then publishes them."""

    def __init__(self, model: str, root: Path | None = None, version: str | None = None) -> None:
        self.model = model
        self.version = version or new_version()
        self.model_dir = artifacts_root(root) / model
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".tmp-{self.version}-", dir=self.model_dir))

    def finish(self, metadata: dict[str, Any], item_ids: np.ndarray,
               item_vectors: np.ndarray, *, unit: bool = True,
               reasons: np.ndarray | None = None, content=None, movies=None) -> Path:
        """Write vectors and metadata, move the version into place, point LATEST at it.

        ``unit`` rows are L2-normalized here; otherwise they are stored as given (a model
        whose score is an inner product with extra terms folded into the vectors).
        ``reasons`` (:mod:`movierec.models.reasons`, one row per movie) explain them;
        ``content`` (:class:`movierec.models.content.ContentMap`) embeds new movies;
        ``movies`` (the data set's frame) gives each item's year and genres
        (``item_movies.json``), so the artifact can be published without its data set.
        """
        ids = np.asarray(item_ids, dtype=np.int64)
        vectors = normalize(item_vectors) if unit else np.asarray(item_vectors, np.float32)
        if vectors.ndim != 2 or len(ids) != len(vectors):
            raise DataError("item_ids and item_vectors must have one row per movie")
        np.save(self.path / "item_ids.npy", ids)
        np.save(self.path / "item_vectors.npy", vectors)
        if reasons is not None:
            if len(reasons) != len(ids):
                raise DataError("the reasons table must have one row per movie")
            metadata = {**metadata, "reasons": reasons_file.save(self.path, reasons)}
        if content is not None:
            metadata = {**metadata, "content_map": content.save(self.path)}
        if movies is not None:
            write_item_movies(self.path, ids, movies)
        meta = {"format": FORMAT_VERSION, "model": self.model, "version": self.version,
                "dim": int(vectors.shape[1]), "num_items": int(len(ids)), "normalized": unit,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **metadata}
        (self.path / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        final = self.model_dir / self.version
        if final.exists():
            shutil.rmtree(final)
        self.path.rename(final)
        write_pointer(self.model_dir / "LATEST", self.version)
        return final

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def write_pointer(path: Path, text: str) -> None:
    """Replace the one-line file ``path`` (``LATEST``, ``PREVIOUS``) atomically."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".latest-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, path)


def latest(model: str, root: Path | None = None) -> Path:
    """The directory of ``model``'s newest complete version."""
    pointer = artifacts_root(root) / model / "LATEST"
    if not pointer.is_file():
        raise DataError(f"no {model} artifact under {pointer.parent}; train it first "
                        f"(`movierec train {model}`)")
    return pointer.parent / pointer.read_text().strip()


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "metadata.json").read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable artifact metadata in {path}: {exc}") from exc


ITEM_MOVIES = "item_movies.json"


def write_item_movies(directory: Path, ids: np.ndarray, movies) -> None:
    """Each item's year (0: unknown) and genres, in ``item_ids`` order."""
    frame = movies.set_index("movie_id").reindex(ids)
    years = [0 if y != y else int(y) for y in frame["year"].to_numpy()]
    genres = [list(g) if isinstance(g, tuple | list) else [] for g in frame["genres"]]
    (directory / ITEM_MOVIES).write_text(json.dumps({"year": years, "genres": genres}))


def read_item_movies(path: Path) -> tuple[np.ndarray, list[list[str]]] | None:
    """(years, genres) of an artifact's items; None for one written without them."""
    if not (path / ITEM_MOVIES).is_file():
        return None
    found = json.loads((path / ITEM_MOVIES).read_text())
    return np.asarray(found["year"], dtype=np.int32), found["genres"]


def item_rows(sorted_ids: np.ndarray, movie_ids, field: str = "liked_movie_ids") -> np.ndarray:
    """Row of each of ``movie_ids`` in an artifact's sorted ``sorted_ids``; any unknown id
    is INVALID_ARGUMENT on ``field`` (the first ten named)."""
    ids = np.asarray(movie_ids, dtype=np.int64).reshape(-1)
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    unknown = ids[sorted_ids[pos] != ids]
    if len(unknown):
        shown = ", ".join(str(i) for i in unknown[:10])
        raise InvalidArgument(field, f"unknown movie ids: {shown}")
    return pos


def read_item_vectors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(movie ids, item vectors) of an artifact: scores are inner products with the rows."""
    return np.load(path / "item_ids.npy"), np.load(path / "item_vectors.npy")
