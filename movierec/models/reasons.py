"""Why a movie is recommended: the liked movies that co-rating says explain it.

Each model version carries a table, built from the ratings it was trained on, that
lists for every movie the movies most *co-liked* with it: item-to-item cosine over
the training ratings >= 4 (users as dimensions, 1 where a user liked a movie), the
measure behind "customers who liked X also liked Y" rows, best first, at most
``k`` of them. Films of the same series (by title: *Star Wars: Episode V* and *Star
Wars: Episode IV*, *The Godfather: Part II* and *The Godfather*) that are among
them come first: a sequel's reason is its series. A movie with no co-liked
neighbour (no training ratings >= 4) has an empty row.

The retriever stores each movie's row beside its vector; a recommended movie's reason
is the first movie of its row that the user liked (:func:`pick_reason`), so the reason
is always a movie co-rating supports, and a movie whose row holds nothing the user
liked gets no "because you liked" at all (the gateway then gives a genre or a
popularity reason). Serving needs no model code: only the row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # building a table needs pandas and scipy; serving one needs neither
    import pandas as pd
    from scipy import sparse

FILE = "neighbours.npy"
LIKED = 4
DEFAULT_K = 100
_ARTICLE = re.compile(r",\s*(the|a|an|les|la|le|il|el|die|der|das)$", re.IGNORECASE)
_SEQUEL = re.compile(r"([\s,]+(part\s+)?([0-9]+|[ivx]+|3-d)|[²³])$")


def series_key(title: str) -> str:
    """A title's series name: the title without its trailing article, its subtitle
    (after ':' or ' - ') and its sequel number (2, II, Part II, 3-D).

    ``Godfather: Part II, The`` -> ``godfather``; ``Back to the Future Part III`` ->
    ``back to the future``; ``Star Wars: Episode IV - A New Hope`` -> ``star wars``;
    ``Toy Story 2`` -> ``toy story``. Movies whose keys are equal form a series."""
    text = _ARTICLE.sub("", title.strip()).lower()
    text = re.split(r":| - ", text, maxsplit=1)[0].strip()
    previous = None
    while previous != text:
        previous, text = text, _SEQUEL.sub("", text).strip(" ,")
    return text or title.strip().lower()


def series_of(titles: Sequence[str]) -> np.ndarray:
    """Per title, a series number shared by every title with the same key (-1: alone)."""
    keys = [series_key(t) for t in titles]
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    numbers = {key: n for n, key in enumerate(k for k, c in counts.items() if c >= 2)}
    return np.asarray([numbers.get(k, -1) for k in keys], dtype=np.int64)


def liked_matrix(ratings: pd.DataFrame, movie_ids: np.ndarray) -> sparse.csr_matrix:
    """Movies x users, 1 where the user rated the movie >= 4 (movies in ``movie_ids`` order)."""
    import pandas as pd
    from scipy import sparse

    liked = ratings[ratings["rating"] >= LIKED]
    rows = pd.Index(movie_ids).get_indexer(liked["movie_id"])
    keep = rows >= 0
    users, cols = np.unique(liked["user_id"].to_numpy()[keep], return_inverse=True)
    data = np.ones(int(keep.sum()), dtype=np.float32)
    return sparse.csr_matrix((data, (rows[keep], cols)), shape=(len(movie_ids), len(users)))


def co_liked(ratings: pd.DataFrame, movie_ids: np.ndarray, titles: Sequence[str],
             k: int = DEFAULT_K, block: int = 512) -> np.ndarray:
    """The reasons table: row i lists movie ids co-liked with ``movie_ids[i]``, series
    first, then by cosine; 0 pads. Computed in blocks of rows (memory ~ block x movies)."""
    movie_ids = np.asarray(movie_ids, dtype=np.int64)
    matrix = liked_matrix(ratings, movie_ids)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    series = series_of(titles)
    table = np.zeros((len(movie_ids), k), dtype=np.int64)
    for start in range(0, len(movie_ids), block):
        rows = slice(start, min(start + block, len(movie_ids)))
        cosine = (matrix[rows] @ matrix.T).toarray()
        cosine /= np.maximum(np.outer(norms[rows], norms), 1e-12)
        for offset, row in enumerate(cosine):
            table[start + offset] = _row(start + offset, row, series, movie_ids, k)
    return table


def _row(index: int, cosine: np.ndarray, series: np.ndarray, movie_ids: np.ndarray,
         k: int) -> np.ndarray:
    cosine[index] = 0.0
    count = min(k, int((cosine > 0).sum()))
    out = np.zeros(k, dtype=np.int64)
    if count == 0:
        return out
    best = np.argpartition(-cosine, count - 1)[:count]
    other = series[best] != series[index] if series[index] >= 0 else np.ones(count, bool)
    best = best[np.lexsort((movie_ids[best], -cosine[best], other))]   # ties: smaller id
    out[:count] = movie_ids[best]
    return out


def for_movies(movies: pd.DataFrame, ratings: pd.DataFrame, k: int = DEFAULT_K) -> np.ndarray:
    """The reasons table of every movie of ``movies`` in movie id order (the order both
    models export their item vectors in), from the ratings a model trained on."""
    ordered = movies.sort_values("movie_id")
    return co_liked(ratings, ordered["movie_id"].to_numpy(np.int64), ordered["title"].tolist(), k)


def pick_reason(row: Iterable[int], liked: set[int] | frozenset[int]) -> int:
    """The first movie of a reasons row that the user liked (0: none)."""
    for movie_id in row:
        if movie_id in liked:
            return int(movie_id)
    return 0


def save(directory: Path, table: np.ndarray) -> dict:
    """Write the table into an artifact directory; the metadata that describes it."""
    np.save(directory / FILE, np.asarray(table, dtype=np.int64))
    return {"file": FILE, "k": int(table.shape[1]), "liked": f"rating >= {LIKED}",
            "measure": "item-item cosine of training ratings >= 4, series (title) first"}


def load(directory: Path) -> np.ndarray | None:
    """The artifact's reasons table, rows in ``item_ids.npy`` order (None: an older
    artifact without one)."""
    path = directory / FILE
    return np.load(path) if path.is_file() else None
