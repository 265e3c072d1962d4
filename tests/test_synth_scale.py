"""``movierec data synth --ratings``: MovieLens-shaped synthetic data at scale, and its check."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from movierec.data.cli import main
from movierec.data.movielens import AGE_BUCKETS, GENRES, MovieLens, parse_ml1m
from movierec.data.synth_check import compare, curves
from movierec.data.synth_scale import MIN_PER_USER, ScaleSpec, plan, write_scale
from movierec.data.synthetic import generate, write_ml1m

FILES = ("ratings.dat", "movies.dat", "users.dat")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[ScaleSpec, Path]:
    spec = plan(60_000, seed=3)
    directory = tmp_path_factory.mktemp("synth") / "s3"
    write_scale(spec, directory)
    return spec, directory


@pytest.fixture(scope="module")
def data(written: tuple[ScaleSpec, Path]) -> MovieLens:
    return parse_ml1m(written[1], "synth")


def test_a_seed_always_writes_the_same_bytes(written, tmp_path: Path) -> None:
    spec, first = written
    write_scale(spec, tmp_path / "again")
    assert all(filecmp.cmp(first / f, tmp_path / "again" / f, shallow=False) for f in FILES)
    write_scale(plan(60_000, seed=4), tmp_path / "other")
    assert not filecmp.cmp(first / "ratings.dat", tmp_path / "other" / "ratings.dat",
                           shallow=False)


def test_the_files_are_ml1m_files_the_loader_reads(written, data: MovieLens) -> None:
    spec, directory = written
    assert len(data.ratings) == spec.ratings
    assert len(data.users) == spec.users and len(data.movies) == spec.movies
    assert data.ratings["rating"].between(1, 5).all()
    assert set(data.users["age"]) <= set(AGE_BUCKETS) and set(data.genres) <= set(GENRES)
    assert data.movies["year"].notna().all()
    assert data.movies["year"].between(1915, spec.first_year).all()
    assert all(1 <= len(g) <= 6 for g in data.movies["genres"])
    line = (directory / "ratings.dat").read_text("latin-1").splitlines()[0]
    assert len(line.split("::")) == 4


def test_sizes_grow_like_movielens_and_explicit_sizes_are_kept() -> None:
    ml1m, ml25m = plan(1_000_209), plan(25_000_095)
    assert (ml1m.users, ml1m.movies) == (6_040, 3_883)
    assert (ml25m.users, ml25m.movies) == (162_541, 62_423)
    assert plan(50_000, users=200, movies=900).users == 200
    with pytest.raises(ValueError, match="20"):
        plan(1_000, users=100)
    with pytest.raises(ValueError, match="60 %|60%"):
        plan(100_000, users=100, movies=1_000)


def test_pairs_are_unique_and_activity_is_bounded(written, data: MovieLens) -> None:
    spec, _ = written
    ratings = data.ratings
    assert not ratings.duplicated(["user_id", "movie_id"]).any()
    per_user = ratings.groupby("user_id").size()
    assert len(per_user) == spec.users
    assert per_user.min() >= MIN_PER_USER and per_user.max() <= spec.max_per_user
    assert per_user.max() > 5 * per_user.median()  # a log-normal's long tail


def test_timestamps_increase_per_user_inside_the_span(written, data: MovieLens) -> None:
    spec, _ = written
    ratings = data.ratings
    assert (ratings.groupby("user_id")["timestamp"].diff().dropna() > 0).all()
    years = pd.to_datetime(ratings["timestamp"], unit="s").dt.year
    assert years.between(spec.first_year, spec.last_year).all()
    assert years.nunique() > 10  # users spread over the years
    released = ratings["movie_id"].map(data.movies.set_index("movie_id")["year"])
    assert (years >= released).all()


def test_popularity_is_long_tailed(data: MovieLens) -> None:
    counts = np.sort(data.ratings["movie_id"].value_counts().to_numpy())[::-1]
    top_tenth = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_tenth > 0.35
    assert len(counts) < len(data.movies)  # some movies are never rated, as in ml-1m


def test_stars_follow_ml1m_shares_and_profiles_shift_taste(data: MovieLens) -> None:
    ratings = data.ratings.merge(data.users[["user_id", "age"]], on="user_id")
    shares = ratings["rating"].value_counts(normalize=True).sort_index().to_numpy()
    assert np.allclose(shares, [0.056, 0.108, 0.261, 0.349, 0.226], atol=0.02)
    genre = data.movies.set_index("movie_id")["genres"].str[0]
    ratings["genre"] = ratings["movie_id"].map(genre)

    def spread(frame: pd.DataFrame) -> float:
        cell = frame.groupby(["age", "genre"])["rating"].mean()
        return float((cell - cell.groupby("genre").transform("mean")).abs().mean())

    shuffled = ratings.assign(age=np.random.default_rng(0).permutation(ratings["age"]))
    assert spread(ratings) > 2 * spread(shuffled)


def test_synth_cli_scale_mode_and_old_flags(tmp_path: Path, capsys) -> None:
    assert main(["synth", "--out", str(tmp_path / "big"), "--ratings", "30000",
                 "--seed", "1"]) == 0
    said = capsys.readouterr().out
    assert "30,000 ratings" in said and "peak RSS" in said and " s, " in said
    assert len(parse_ml1m(tmp_path / "big").ratings) == 30_000
    assert main(["synth", "--out", str(tmp_path / "old"), "--users", "50", "--movies", "80",
                 "--per-user", "20", "--seed", "3"]) == 0
    assert parse_ml1m(tmp_path / "old").ratings.equals(generate(50, 80, 20, seed=3).ratings)
    assert main(["synth", "--out", str(tmp_path / "no"), "--ratings", "100",
                 "--users", "50"]) == 1


def test_check_passes_against_itself_and_flags_other_curves(written, tmp_path: Path,
                                                            capsys) -> None:
    _, directory = written
    assert main(["synth-check", "--data-dir", str(directory), "--against",
                 str(directory)]) == 0
    table = capsys.readouterr().out
    for metric in ("top 10% movies' share", "zipf exponent", "ratings/user q50",
                   "log-normal sigma"):
        assert metric in table
    assert " NO " not in table
    flat = write_ml1m(generate(300, 400, 40, seed=0), tmp_path / "flat")
    assert main(["synth-check", "--data-dir", str(flat), "--against", str(directory)]) == 1
    off = capsys.readouterr().out.splitlines()[-1]
    assert off.startswith("off:") and "log-normal sigma" in off


def test_curves_resemble_ml1m(shared_data: Path | None, tmp_path: Path) -> None:
    ml1m = shared_data / "ml-1m" if shared_data else None
    if ml1m is None or not (ml1m / "ratings.dat").is_file():
        pytest.skip("ml-1m not present")
    write_scale(plan(200_000, seed=0), tmp_path)
    rows = compare(curves(tmp_path), curves(ml1m))
    assert [row.metric for row in rows if not row.ok] == []
