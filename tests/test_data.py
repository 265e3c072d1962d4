"""MovieLens parsing, synthetic data, splits and the checksum-verified download."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from movierec.data import source
from movierec.data.movielens import age_bucket, parse_directory, split_title
from movierec.data.splits import SPLITS, make_split, recbole_cuts
from movierec.data.synthetic import from_name, generate, write_ml1m
from movierec.errors import DataError


def test_ml1m_format_parses_separators_and_latin1(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_bytes(b"1::10::5::978300760\n2::10::3::978300761\n")
    (tmp_path / "movies.dat").write_bytes(
        "10::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi\n".encode("latin-1"))
    (tmp_path / "users.dat").write_bytes(b"1::F::1::10::48067\n2::M::56::16::70072\n")
    data = parse_directory(tmp_path)
    movie = data.movies.iloc[0]
    assert movie.title == "Cité des enfants perdus, La"
    assert movie.year == 1995 and movie.genres == ("Adventure", "Sci-Fi")
    assert data.ratings["rating"].tolist() == [5, 3]
    assert data.users["occupation"].tolist() == [10, 16]


def test_ml100k_format_maps_ages_occupations_and_genres(ml100k_dir: Path) -> None:
    data = parse_directory(ml100k_dir)
    assert (len(data.ratings), len(data.users), len(data.movies)) == (100_000, 943, 1682)
    first = data.users.iloc[0]  # 1|24|M|technician|85711
    assert (first.gender, first.age, first.occupation) == ("M", 18, 17)
    toy = data.movies.iloc[0]
    assert (toy.title, toy.year) == ("Toy Story", 1995)
    assert toy.genres == ("Animation", "Children's", "Comedy")
    assert data.movies["title"].str.contains("é").any()  # latin-1 decoded


def test_malformed_rating_is_a_data_error(tmp_path: Path) -> None:
    write_ml1m(generate(5, 10, 5), tmp_path)
    (tmp_path / "ratings.dat").write_text("1::1::9::1\n")
    with pytest.raises(DataError, match="1-5"):
        parse_directory(tmp_path)


@pytest.mark.parametrize(("raw", "expected"), [
    ("Toy Story (1995)", ("Toy Story", 1995)),
    ("Seven (Se7en) (1995)", ("Seven (Se7en)", 1995)),
    ("unknown", ("unknown", None)),
])
def test_split_title(raw: str, expected: tuple) -> None:
    assert split_title(raw) == expected


@pytest.mark.parametrize(("years", "bucket"), [(0, 1), (17, 1), (18, 18), (25, 25), (44, 35),
                                               (49, 45), (55, 50), (56, 56), (99, 56)])
def test_age_bucket(years: int, bucket: int) -> None:
    assert age_bucket(years) == bucket


def test_synthetic_is_deterministic_and_round_trips_ml1m_format(tmp_path: Path) -> None:
    first, second = generate(50, 80, 20, seed=3), generate(50, 80, 20, seed=3)
    assert first.ratings.equals(second.ratings) and first.checksum == second.checksum
    assert not first.ratings.equals(generate(50, 80, 20, seed=4).ratings)
    back = parse_directory(write_ml1m(first, tmp_path))
    assert back.ratings.reset_index(drop=True).equals(first.ratings.reset_index(drop=True))
    assert back.movies["title"].tolist() == first.movies["title"].tolist()
    assert from_name("synthetic-50x80x20-s3").checksum == first.checksum
    assert not first.ratings.duplicated(["user_id", "movie_id"]).any()


def _keys(frame) -> set:
    return set(zip(frame["user_id"], frame["movie_id"], strict=True))


@pytest.mark.parametrize("name", SPLITS)
def test_splits_are_disjoint_deterministic_and_cover(name: str) -> None:
    data = generate(120, 150, 25, seed=1)
    split, again = make_split(data, name, seed=5), make_split(data, name, seed=5)
    parts = [split.train, split.valid, split.test]
    assert all(a.index.equals(b.index) for a, b in zip(parts, [again.train, again.valid,
                                                                again.test], strict=True))
    keys = [_keys(p) for p in parts]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    expected = data.ratings if name != "recbole_811" else data.ratings[data.ratings.rating >= 3]
    assert sum(len(p) for p in parts) == len(expected)


def test_random_90_10_sizes() -> None:
    split = make_split(generate(100, 100, 20, seed=2), "random_90_10")
    total = len(split.train) + len(split.test)
    assert abs(len(split.test) - 0.1 * total) <= 1 and split.valid.empty


def test_recbole_811_per_user_ratios_and_no_low_ratings() -> None:
    data = generate(100, 200, 30, seed=2)
    split = make_split(data, "recbole_811")
    for part in (split.train, split.valid, split.test):
        assert part["rating"].min() >= 3
    kept = data.ratings[data.ratings.rating >= 3].groupby("user_id").size()
    for user, total in kept.items():
        sizes = [int((p.user_id == user).sum()) for p in (split.train, split.valid, split.test)]
        assert sizes == recbole_cuts(int(total))
    assert set(split.test.user_id) <= set(split.train.user_id)


def test_recbole_cuts_matches_recbole_rule() -> None:
    assert recbole_cuts(10) == [8, 1, 1]
    assert recbole_cuts(5) == [3, 1, 1]
    assert recbole_cuts(2) == [1, 0, 1]
    assert recbole_cuts(25) == [21, 2, 2]


def test_leave_last_out_has_no_future_leakage() -> None:
    data = generate(80, 100, 15, seed=9)
    split = make_split(data, "leave_last_out")
    assert split.test.user_id.is_unique and len(split.test) == data.ratings.user_id.nunique()
    last_train = split.train.groupby("user_id").timestamp.max()
    valid = split.valid.set_index("user_id").timestamp
    test = split.test.set_index("user_id").timestamp
    assert (last_train.loc[valid.index] <= valid).all()
    assert (valid.loc[test.index] <= test).all()


def test_locate_follows_movielens_dir_to_sibling(monkeypatch, ml100k_dir: Path) -> None:
    monkeypatch.setenv("MOVIELENS_DIR", str(ml100k_dir.parent / "ml-1m"))
    assert source.locate("ml-100k") == ml100k_dir.resolve()


def test_a_snapshot_is_never_taken_from_movielens_dir(monkeypatch, tmp_path: Path) -> None:
    """MOVIELENS_DIR pointing straight at ml-1m's files (as ``make test`` sets it) has a
    snapshot's layout; a ``catalog-<time>`` name must still resolve under the cache only."""
    movielens = write_ml1m(generate(10, 20, 5), tmp_path / "ml-1m")
    monkeypatch.setenv("MOVIELENS_DIR", str(movielens))
    monkeypatch.setenv("MOVIEREC_HOME", str(tmp_path / "home"))
    name = "catalog-20261207T000000Z"
    assert source.locate(name) is None
    snapshot = write_ml1m(generate(4, 6, 3), source.cache_dir() / name)
    assert source.locate(name) == snapshot.resolve()
    assert source.locate("ml-1m") == movielens.resolve()


def _serve(directory: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _zip(tmp_path: Path) -> tuple[Path, str]:
    buffer = io.BytesIO()
    data_dir = write_ml1m(generate(10, 20, 5), tmp_path / "src")
    with zipfile.ZipFile(buffer, "w") as zipped:
        for path in data_dir.iterdir():
            zipped.write(path, f"ml-1m/{path.name}")
    archive = tmp_path / "www" / "ml-1m.zip"
    archive.parent.mkdir()
    archive.write_bytes(buffer.getvalue())
    return archive, hashlib.md5(buffer.getvalue()).hexdigest()  # noqa: S324


def test_fetch_verifies_checksum_and_unpacks(tmp_path: Path) -> None:
    archive, md5 = _zip(tmp_path)
    httpd = _serve(archive.parent)
    url = f"http://127.0.0.1:{httpd.server_port}/ml-1m.zip"
    try:
        with pytest.raises(DataError, match="checksum mismatch"):
            source.fetch("ml-1m", tmp_path / "bad", url=url, md5="0" * 32, progress=False)
        assert not (tmp_path / "bad" / "ml-1m").exists()
        folder = source.fetch("ml-1m", tmp_path / "good", url=url, md5=md5, progress=False)
    finally:
        httpd.shutdown()
    assert len(parse_directory(folder).users) == 10
    assert np.all(parse_directory(folder).ratings.rating.between(1, 5))


def test_the_time_split_cuts_all_ratings_at_two_moments() -> None:
    from movierec.data.splits import make_split
    from movierec.data.synthetic import generate

    data = generate(60, 80, 12, seed=4)
    split = make_split(data, "time_80_10_10")
    parts = (split.train, split.valid, split.test)
    assert sum(len(p) for p in parts) == len(data.ratings)
    assert set().union(*(set(p.index) for p in parts)) == set(data.ratings.index)
    assert len(split.train) == pytest.approx(0.8 * len(data.ratings), abs=2)
    assert split.train["timestamp"].max() <= split.valid["timestamp"].min()
    assert split.valid["timestamp"].max() <= split.test["timestamp"].min()
