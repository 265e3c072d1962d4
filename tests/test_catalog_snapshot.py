"""``movierec snapshot`` / ``train --from-catalog``: what retraining reads is the catalog as
it is now — online ratings, movies and users added through the API, no deleted user."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from test_catalog_writes import DATA, catalog_url, movie, run  # noqa: F401 - fixture

from movierec.catalog.v1 import catalog_pb2 as pb
from movierec.data.source import load_dataset
from movierec.services.catalog.snapshot import export


def test_a_snapshot_holds_what_the_api_wrote_and_not_what_it_deleted(
        catalog_url: str, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    gone = int(DATA.ratings["user_id"].iloc[0])

    async def writes(stub):
        added = (await stub.UpsertMovies(pb.UpsertMoviesRequest(movies=[
            movie("Zephyr Canyon", 1999, ("Western",))]), timeout=5)).movies[0]
        signed = (await stub.UpsertUser(pb.UpsertUserRequest(age=33, gender="F",
                                                             occupation=7), timeout=5)).user
        await stub.RecordRating(pb.RecordRatingRequest(user_id=signed.user_id,
                                                       movie_id=added.movie_id, rating=5),
                                timeout=5)
        await stub.RecordRating(pb.RecordRatingRequest(user_id=99_999, movie_id=1, rating=4),
                                timeout=5)                       # a user without a profile
        await stub.DeleteUser(pb.DeleteUserRequest(user_id=gone), timeout=5)
        return added, signed
    added, signed = run(catalog_url, writes)
    taken = asyncio.run(export(catalog_url, tmp_path))
    data = load_dataset(taken.name, tmp_path)
    assert taken.name.startswith("catalog-") and data.name == taken.name
    movies = data.movies.set_index("movie_id")
    assert movies.loc[added.movie_id, "title"] == "Zephyr Canyon"
    assert movies.loc[added.movie_id, "year"] == 1999
    assert tuple(movies.loc[added.movie_id, "genres"]) == ("Western",)
    ratings = data.ratings
    assert gone not in set(ratings["user_id"]) and gone not in set(data.users["user_id"])
    assert ((ratings["user_id"] == signed.user_id) & (ratings["movie_id"] == added.movie_id)
            & (ratings["rating"] == 5)).sum() == 1
    assert 99_999 in set(ratings["user_id"]) and 99_999 not in set(data.users["user_id"])
    assert signed.user_id in set(data.users["user_id"])
    expected = len(DATA.ratings) - (DATA.ratings["user_id"] == gone).sum() + 2
    assert taken.counts["ratings"] == len(ratings) == expected
    meta = json.loads((taken.path / "snapshot.json").read_text())
    assert meta["ratings"] == expected and meta["catalog_version"] == taken.catalog_version
    assert not list(tmp_path.glob(".*.tmp"))                     # written, then renamed


def test_train_from_catalog_learns_from_a_snapshot_taken_now(
        catalog_url: str, tmp_path: Path, monkeypatch) -> None:  # noqa: F811 - the fixture
    """``movierec train fusion --from-catalog``: the artifact names the snapshot it
    learned from, and the snapshot is where every later command finds it by that name."""
    from movierec import cli
    from movierec.models.artifact import latest, read_metadata

    monkeypatch.setenv("DATABASE_URL", catalog_url)
    monkeypatch.setenv("MOVIEREC_HOME", str(tmp_path / "home"))
    run(catalog_url, lambda stub: stub.RecordRating(
        pb.RecordRatingRequest(user_id=99_998, movie_id=2, rating=5), timeout=5))
    assert cli.main(["train", "fusion", "--from-catalog", "--max-epochs", "1", "--no-progress",
                     "--artifacts", str(tmp_path / "artifacts"),
                     "--checkpoint-dir", str(tmp_path / "ckpt")]) == 0
    meta = read_metadata(latest("fusion", tmp_path / "artifacts"))
    assert meta["dataset"].startswith("catalog-")
    snapshot = load_dataset(meta["dataset"])          # found by name under MOVIEREC_HOME
    assert snapshot.checksum == meta["data_checksum"]
    assert 99_998 in set(snapshot.ratings["user_id"])   # kept; fusion skips profile-less users
