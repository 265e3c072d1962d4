"""Tests of the fusion two-tower model on small synthetic data (no MovieLens files needed)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")

from movierec.data.source import load_dataset  # noqa: E402
from movierec.data.splits import make_split  # noqa: E402
from movierec.errors import InvalidArgument  # noqa: E402
from movierec.models.artifact import read_item_vectors, read_metadata  # noqa: E402
from movierec.models.fusion import commands  # noqa: E402
from movierec.models.fusion.baselines import BiasBaseline, GlobalMean, rmse  # noqa: E402
from movierec.models.fusion.data import build_tables  # noqa: E402
from movierec.models.fusion.export import load_model, movie_vectors  # noqa: E402
from movierec.models.fusion.inference import (  # noqa: E402
    FusionEncoder,
    FusionRecommender,
    Profile,
)

DATASET = "synthetic-300x400-s0"
EPOCHS = 6


def _parse(kind: str, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default=DATASET)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--artifacts", type=Path, default=None)
    if kind == "train":
        commands.add_train_args(parser)
    else:
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--artifact", type=Path, default=None)
        commands.add_evaluate_args(parser)
    return parser.parse_args(list(argv))


def _train(root: Path, *extra: str) -> Path:
    args = _parse("train", "--artifacts", str(root / "artifacts"), "--checkpoint-dir",
                  str(root / "ckpt"), "--epochs", str(EPOCHS), "--no-progress", *extra)
    assert commands.train(args) == 0
    return root / "artifacts" / "fusion" / (root / "artifacts" / "fusion" / "LATEST").read_text(
    ).strip()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("fusion"))


@pytest.fixture(scope="module")
def data():
    return load_dataset(DATASET)


@pytest.fixture(scope="module")
def evaluation(artifact) -> dict:
    from movierec.models.fusion.evaluate import evaluate_artifact

    return evaluate_artifact(artifact, load_dataset(DATASET))


def test_training_reduces_loss_and_beats_global_mean(artifact, evaluation):
    history = read_metadata(artifact)["history"]
    assert history[-1]["train_mse"] < 0.7 * history[0]["train_mse"]
    assert history[-1]["valid_rmse"] < history[0]["valid_rmse"]
    assert evaluation["fusion"]["rmse"] < evaluation["global_mean"]["rmse"] - 0.2
    assert evaluation["fusion"]["rmse"] < evaluation["bias_als"]["rmse"]


def test_exported_metrics_match_the_numpy_serving_path(artifact, evaluation):
    stored = read_metadata(artifact)["metrics"]
    assert evaluation["fusion"]["rmse"] == pytest.approx(stored["test"]["rmse"], abs=1e-4)
    assert evaluation["fusion_cold_start"]["rmse"] == pytest.approx(
        stored["test_cold_start"]["rmse"], abs=1e-4)


def test_bias_baseline_beats_global_mean(data):
    split = make_split(data, "random_90_10", 1)
    truth = split.test["rating"].to_numpy()
    mean_rmse = rmse(GlobalMean().fit(split.train).predict(split.test), truth)
    assert rmse(BiasBaseline().fit(split.train).predict(split.test), truth) < mean_rmse - 0.1


def test_artifact_contents(artifact, data):
    meta = read_metadata(artifact)
    ids, vectors = read_item_vectors(artifact)
    assert sorted(ids.tolist()) == sorted(data.movies["movie_id"].tolist())
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert meta["dim"] == vectors.shape[1] == 200
    assert meta["data_checksum"] == data.checksum
    assert {"scale", "offset"} <= set(meta["score"]) and meta["score"]["scale"] > 0
    assert meta["training_seconds"] > 0 and meta["params"]["hidden"] == 200


def test_load_round_trip_gives_identical_vectors(artifact, data):
    model, cfg, vocab = load_model(artifact)
    ids, stored = read_item_vectors(artifact)
    tables = build_tables(vocab, data, cfg.window)
    assert np.array_equal(tables.movie_ids, ids)
    np.testing.assert_allclose(movie_vectors(model, tables), stored, atol=1e-6)
    users = tables.users
    with paddle.no_grad():
        raw = model.user(*(paddle.to_tensor(a) for a in (users.uid, users.gender, users.age,
                                                         users.occupation))).numpy()
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    encoder = FusionEncoder.load(artifact)
    got = encoder.encode_indices(users.uid, users.gender, users.age, users.occupation)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_inner_product_ranking_equals_model_score_ranking(artifact, data):
    model, cfg, vocab = load_model(artifact)
    tables = build_tables(vocab, data, cfg.window)
    ids, items = read_item_vectors(artifact)
    encoder = FusionEncoder.load(artifact)
    movies, n = tables.movies, len(ids)
    for row in (0, 17, 123):
        user = tables.users.take(np.full(n, row))
        inputs = [user.uid, user.gender, user.age, user.occupation, movies.mid, movies.genres,
                  tables.windows]
        with paddle.no_grad():
            model_scores = model(*(paddle.to_tensor(a) for a in inputs)).numpy()
        vector = encoder.encode_indices(*(a[:1] for a in (user.uid, user.gender, user.age,
                                                          user.occupation)))[0]
        inner = items @ vector
        np.testing.assert_allclose(encoder.offset + encoder.scale * inner, model_scores,
                                   atol=1e-4)
        assert np.array_equal(np.argsort(-model_scores)[:20], np.argsort(-inner)[:20])


def test_cold_start_uses_profile_only(artifact, evaluation):
    encoder = FusionEncoder.load(artifact)
    unknown = max(encoder.vocab.user_ids) + 1000
    anonymous = encoder.encode_one(30, "F", 4)
    assert np.array_equal(encoder.encode_one(30, "F", 4, user_id=unknown), anonymous)
    assert not encoder.knows(unknown) and encoder.knows(encoder.vocab.user_ids[0])
    known = encoder.encode_one(30, "F", 4, user_id=encoder.vocab.user_ids[0])
    assert not np.allclose(known, anonymous)
    assert not np.allclose(encoder.encode_one(60, "M", 13), anonymous)
    assert np.linalg.norm(anonymous) == pytest.approx(1.0, abs=1e-5)
    assert evaluation["fusion_cold_start"]["rmse"] < evaluation["global_mean"]["rmse"] - 0.1


def test_batched_encoding_equals_single_and_is_fast(artifact):
    encoder = FusionEncoder.load(artifact)
    profiles = [Profile(25, "M", 3), Profile(70, "F", 20, 5), Profile(1, "F", 0)]
    batch = encoder.encode(profiles)
    assert batch.shape == (3, 200) and batch.dtype == np.float32
    for profile, row in zip(profiles, batch, strict=True):
        np.testing.assert_allclose(encoder.encode([profile])[0], row, atol=1e-6)
    timings = []
    for _ in range(200):
        start = time.perf_counter()
        encoder.encode_one(33, "M", 7, 12)
        timings.append(time.perf_counter() - start)
    assert np.median(timings) < 0.005


@pytest.mark.parametrize(("profile", "field"), [
    (Profile(0, "M", 1), "age"), (Profile(121, "M", 1), "age"), (Profile(30.5, "M", 1), "age"),
    (Profile(30, "X", 1), "gender"), (Profile(30, "m", 1), "gender"),
    (Profile(30, "F", 21), "occupation"), (Profile(30, "F", -1), "occupation"),
    (Profile(30, "F", 2, 0), "user_id"), (Profile(30, "F", 2, -4), "user_id"),
])
def test_invalid_profiles_raise_invalid_argument(artifact, profile, field):
    encoder = FusionEncoder.load(artifact)
    with pytest.raises(InvalidArgument) as error:
        encoder.encode([Profile(30, "M", 1), profile])
    assert error.value.field == field


def test_recommend_top_n(artifact):
    recommender = FusionRecommender.load(artifact)
    profile = Profile(40, "F", 7, 3)
    top = recommender.recommend(profile, n=10)
    assert len(top) == 10 and len({m for m, _ in top}) == 10
    stars = [s for _, s in top]
    assert stars == sorted(stars, reverse=True) and all(1 <= s <= 5 for s in stars)
    again = recommender.recommend(profile, n=10, exclude=[top[0][0]])
    assert top[0][0] not in {m for m, _ in again} and again[0] == top[1]
    with pytest.raises(InvalidArgument):
        recommender.recommend(Profile(40, "F", 99), n=10)


def test_evaluate_command_prints_json(artifact, capsys):
    args = _parse("evaluate", "--json", "--artifact", str(artifact))
    assert commands.evaluate(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["unit"] == "stars" and result["test_ratings"] > 0
    assert {"fusion", "fusion_cold_start", "global_mean", "bias_als"} <= set(result)


def test_training_is_reproducible_with_the_seed(tmp_path):
    first = _train(tmp_path / "a", "--epochs", "1")
    second = _train(tmp_path / "b", "--epochs", "1")
    np.testing.assert_array_equal(read_item_vectors(first)[1], read_item_vectors(second)[1])


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    first = read_metadata(_train(tmp_path, "--epochs", "1"))["history"]
    resumed = read_metadata(_train(tmp_path, "--epochs", "2", "--resume"))["history"]
    assert [h["epoch"] for h in resumed] == [1, 2]
    assert resumed[0] == first[0]
