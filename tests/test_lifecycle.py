"""``movierec retrain`` and ``movierec rollback`` on real stores (PostgreSQL, milvus-lite)
and synthetic data: a challenger trained on a catalog snapshot is promoted (vectors
swapped in Milvus with the previous version kept, the artifact made LATEST), a worse one
is refused and changes nothing, and a rollback serves the previous version again."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from stack_fixture import _database

from movierec import cli
from movierec.data.source import load_dataset
from movierec.models import registry
from movierec.models.artifact import (
    latest,
    read_item_movies,
    read_item_vectors,
    read_metadata,
)
from movierec.services.catalog import loader
from movierec.services.catalog.store import CatalogStore, Movie
from movierec.services.retriever.loader import items_from_artifact, publish
from movierec.services.retriever.milvus import MilvusVectors
from movierec.stack import retrain as lifecycle
from movierec.stack.jobs import take_snapshot

DATASET = "synthetic-120x150x20-s9"
QUICK = ["--max-epochs", "2", "--no-progress"]


def live_versions(uri: str) -> dict[str, str]:
    store = MilvusVectors(uri, timeout=30)
    try:
        return {m: store.resolve(m).version for m in registry.NAMES}
    finally:
        store.close()


@pytest.fixture
def serving(tmp_path: Path, database_url: str, milvus_lite_uri: str, monkeypatch):
    """A catalog of DATASET, champions trained on its files and live in Milvus Lite."""
    url = _database(database_url)
    data = load_dataset(DATASET)
    asyncio.run(loader.load(url, data, data.ratings, progress=False))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("MILVUS_URI", milvus_lite_uri)
    monkeypatch.setenv("MOVIEREC_HOME", str(tmp_path / "home"))
    root = tmp_path / "artifacts"
    for model in registry.NAMES:
        assert cli.main(["train", model, "--dataset", DATASET, "--artifacts", str(root),
                         "--checkpoint-dir", str(tmp_path / f"ckpt-{model}"), *QUICK]) == 0
        path = latest(model, root)
        store = MilvusVectors(milvus_lite_uri, timeout=60)
        publish(store, model, path.name, items_from_artifact(path, DATASET, None),
                drain_seconds=0, progress=False, force=True)
        store.close()
    return root


def scrambled(source: Path, target: Path) -> Path:
    """Copies of ``source``'s latest artifacts with random item vectors, newer versions."""
    for model in registry.NAMES:
        path = latest(model, source)
        copy = target / model / (path.name[:-1] + "9Z")
        shutil.copytree(path, copy)
        meta = read_metadata(copy)
        (copy / "metadata.json").write_text((copy / "metadata.json").read_text().replace(
            meta["version"], copy.name))
        vectors = np.load(copy / "item_vectors.npy")
        np.save(copy / "item_vectors.npy",
                np.random.default_rng(0).normal(size=vectors.shape).astype(np.float32))
        (target / model / "LATEST").write_text(copy.name + "\n")
    return target


async def _writes(url: str) -> tuple[int, int]:
    """Through the catalog's store: a user signs up and rates, a movie is added."""
    store = CatalogStore(url)
    await store.open()
    try:
        user, _ = await store.upsert_user(None, 25, "F", 12, 5)   # age: the bucket code
        [movie] = await store.upsert_movies([Movie(0, "Quiet Harbor Lights", 2003,
                                                   ("Drama", "Romance"))], 5)
        for movie_id, stars in ((movie.movie_id, 5), (1, 4), (2, 5), (3, 2)):
            await store.record_rating(user.user_id, movie_id, stars, 5)
        return user.user_id, movie.movie_id
    finally:
        await store.close()


async def _delete(url: str, user_id: int) -> None:
    store = CatalogStore(url)
    await store.open()
    try:
        await store.delete_user(user_id, 5)
    finally:
        await store.close()


def test_retrain_promotes_refuses_a_worse_model_and_rolls_back(
        serving: Path, milvus_lite_uri: str, tmp_path: Path, capsys) -> None:
    champions = {m: latest(m, serving).name for m in registry.NAMES}
    user, movie = asyncio.run(_writes(os.environ["DATABASE_URL"]))
    # The champions learned every rating the catalog holds (it was loaded from their
    # files): nothing is new to judge them on, so a retrain is refused as unjudged...
    code = lifecycle.retrain_main(["--artifacts", str(serving), "--tolerance", "1",
                                   "--train-args", " ".join(QUICK)])
    assert code == lifecycle.REFUSED and "users rated anything after" in capsys.readouterr().out
    assert {m: latest(m, serving).name for m in registry.NAMES} == champions
    # ... unless the operator says so (the first retrain after a bootstrap)
    code = lifecycle.retrain_main(["--artifacts", str(serving), "--allow-unjudged",
                                   "--train-args", " ".join(QUICK)])
    assert code == 0
    promoted = {m: latest(m, serving).name for m in registry.NAMES}
    assert promoted != champions and live_versions(milvus_lite_uri) == promoted
    for model in registry.NAMES:
        meta = read_metadata(latest(model, serving))
        assert meta["dataset"].startswith("catalog-") and meta["split"] == "time_80_10_10"
        assert (serving / model / "PREVIOUS").read_text().strip() == champions[model]
        ids, _ = read_item_vectors(latest(model, serving))
        assert movie in set(ids.tolist())                # the added movie was learned
        years, genres = read_item_movies(latest(model, serving))   # published from these
        row = ids.tolist().index(movie)
        assert (years[row], genres[row]) == (2003, ["Drama", "Romance"])
    snapshot = load_dataset(read_metadata(latest("pinsage", serving))["dataset"])
    mine = snapshot.ratings[snapshot.ratings["user_id"] == user]
    assert sorted(zip(mine["movie_id"], mine["rating"], strict=True)) == [(1, 4), (2, 5), (3, 2),
                                                             (movie, 5)]

    # The promoted models trained on the oldest 80 % of that snapshot: its newest ratings
    # are unseen by them, so a worse challenger is judged, and refused.
    worse = scrambled(serving, tmp_path / "worse")
    code = lifecycle.retrain_main(["--artifacts", str(serving), "--tolerance", "0",
                                   "--min-users", "10", "--challenger", str(worse),
                                   "--dataset", read_metadata(latest("pinsage", serving))[
                                       "dataset"]])
    said = capsys.readouterr().out
    assert code == lifecycle.REFUSED and "below the serving" in said, said[-600:]
    assert {m: latest(m, serving).name for m in registry.NAMES} == promoted
    assert live_versions(milvus_lite_uri) == promoted

    assert lifecycle.rollback_main(["--artifacts", str(serving)]) == 0
    assert {m: latest(m, serving).name for m in registry.NAMES} == champions
    assert live_versions(milvus_lite_uri) == champions

    asyncio.run(_delete(os.environ["DATABASE_URL"], user))   # the user deletes themself
    later = load_dataset(take_snapshot().name)
    assert user not in set(later.ratings["user_id"]) and user not in set(later.users["user_id"])
    assert movie in set(later.movies["movie_id"])
