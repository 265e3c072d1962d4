"""The content map: a vector for a movie no model trained on, from its own features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from movierec.models import content

GENRES = ("Action", "Comedy", "Drama", "Sci-Fi")


def catalog(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = ["moon", "harbor", "night", "city", "love", "war", "star", "river"]
    return pd.DataFrame({
        "movie_id": np.arange(1, n + 1),
        "title": [" ".join(rng.choice(words, 2, replace=False)) for _ in range(n)],
        "year": rng.integers(1930, 2000, n),
        "genres": [tuple(sorted(set(rng.choice(GENRES, rng.integers(1, 3))))) for _ in range(n)],
    })


def test_a_linear_function_of_the_features_is_recovered(tmp_path: Path) -> None:
    movies = catalog()
    probe = content.fit(movies["title"].tolist(), movies["year"].tolist(),
                        movies["genres"].tolist(), np.zeros((len(movies), 8)), GENRES)
    x = np.stack([probe.features(t, y, g) for t, y, g in
                  zip(movies["title"], movies["year"], movies["genres"], strict=True)])
    vectors = x @ np.random.default_rng(1).normal(size=(x.shape[1], 8)) + 0.5
    trained = np.arange(len(movies)) < 360              # the last 40 are "new" movies
    fitted = content.for_movies(movies, movies["movie_id"].to_numpy(), vectors, trained,
                                GENRES)
    new = movies.iloc[360:]
    predicted = fitted.vectors(list(zip(new["title"], new["year"], new["genres"],
                                        strict=True)))
    cosine = np.sum(predicted * vectors[360:], 1) / (
        np.linalg.norm(predicted, axis=1) * np.linalg.norm(vectors[360:], axis=1))
    assert cosine.mean() > 0.95
    assert fitted.alpha in content.ALPHAS
    meta = fitted.save(tmp_path)
    loaded = content.ContentMap.load(tmp_path)
    assert meta["file"] == content.FILE and loaded.vocabulary == fitted.vocabulary
    assert np.allclose(loaded.vectors([("moon city", 1975, ("Drama",))]),
                       fitted.vectors([("moon city", 1975, ("Drama",))]))
    assert content.ContentMap.load(tmp_path / "missing") is None


def test_features_read_genres_known_words_and_the_year_bucket() -> None:
    fitted = content.fit(["moon city", "moon war", "city war"], [1950, 1960, None],
                         [("Action",), ("Drama",), ()], np.ones((3, 2)), GENRES)
    row = fitted.features("Moon City Zebra", 1952, ("Drama", "Western"))
    genres, words = row[:4], row[4:4 + len(fitted.vocabulary)]
    assert genres.tolist() == [0, 0, 1, 0]                 # unknown genres are ignored
    assert fitted.vocabulary == ("city", "moon", "war")
    assert np.allclose(words, [1 / np.sqrt(2), 1 / np.sqrt(2), 0])   # "zebra" is unknown
    years = row[4 + 3:]
    assert years.sum() == 1 and years[(1952 - content.YEAR_FIRST) // content.YEAR_STEP] == 1
    assert fitted.features("x", None, ())[-1] == 1          # the unknown-year bucket
