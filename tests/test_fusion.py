"""Tests of the fusion two-tower model on small synthetic data (no MovieLens files needed)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
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
from movierec.models.fusion.features import CELLS, cell_features, user_features  # noqa: E402
from movierec.models.fusion.inference import (  # noqa: E402
    FusionEncoder,
    Profile,
    predicted_stars,
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
                  str(root / "ckpt"), "--max-epochs", str(EPOCHS), "--no-progress", *extra)
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


def _profile_recall(path: Path, data, k: int = 10) -> float:
    """Recall@k of the served profile path (id hidden) on the test ratings >= 3 of the
    artifact's split, the user's training movies masked."""
    split = make_split(data, "random_90_10", read_metadata(path)["split_seed"])
    encoder = FusionEncoder.load(path)
    ids, items = read_item_vectors(path)
    users = data.users.sort_values("user_id")
    feats = user_features(encoder.vocab, users).hide_ids()
    scores = encoder.encode_indices(feats.uid, feats.gender, feats.age, feats.occupation) @ items.T
    rows = {u: i for i, u in enumerate(users["user_id"])}
    cols = {m: i for i, m in enumerate(ids)}
    for u, m in zip(split.train["user_id"], split.train["movie_id"], strict=True):
        scores[rows[u], cols[m]] = -np.inf
    liked = split.test[split.test["rating"] >= 3].groupby("user_id")["movie_id"]
    recalls = [len(set(ids[np.argsort(-scores[rows[u]])[:k]]) & set(movies)) / len(movies)
               for u, movies in liked]
    return float(np.mean(recalls))


def test_ranking_loss_makes_the_profile_path_rank(artifact, data, tmp_path):
    regression = _train(tmp_path / "regression", "--rank-weight", "0")
    assert _profile_recall(artifact, data) > _profile_recall(regression, data) + 0.05


def test_frozen_item_biases_stay_at_the_popularity_start(tmp_path):
    """--no-learn-item-bias: the folded biases (the last CELLS + 1 components of the item
    vectors) are the log-popularity start whatever the training length; learned ones move."""
    def biases(path: Path) -> np.ndarray:
        return read_item_vectors(path)[1][:, -1 - CELLS:]
    short = biases(_train(tmp_path / "short", "--no-learn-item-bias", "--max-epochs", "1"))
    long = biases(_train(tmp_path / "long", "--no-learn-item-bias", "--max-epochs", "3"))
    learned = biases(_train(tmp_path / "learned", "--learn-item-bias", "--max-epochs", "3"))
    np.testing.assert_allclose(short, long, atol=1e-6)
    assert np.abs(learned - long).max() > 1e-3


def test_exported_metrics_match_the_numpy_serving_path(artifact, evaluation):
    stored = read_metadata(artifact)["metrics"]
    assert evaluation["fusion"]["rmse"] == pytest.approx(stored["test"]["rmse"], abs=1e-4)
    assert evaluation["fusion_user_ids_hidden"]["rmse"] == pytest.approx(
        stored["test_user_ids_hidden"]["rmse"], abs=1e-4)


def test_bias_baseline_beats_global_mean(data):
    split = make_split(data, "random_90_10", 1)
    truth = split.test["rating"].to_numpy()
    mean_rmse = rmse(GlobalMean().fit(split.train).predict(split.test), truth)
    assert rmse(BiasBaseline().fit(split.train).predict(split.test), truth) < mean_rmse - 0.1


def test_artifact_contents(artifact, data):
    meta = read_metadata(artifact)
    ids, vectors = read_item_vectors(artifact)
    assert sorted(ids.tolist()) == sorted(data.movies["movie_id"].tolist())
    assert np.allclose(np.linalg.norm(vectors[:, :-1 - CELLS], axis=1), 1.0, atol=1e-5)
    assert meta["dim"] == vectors.shape[1] == 200 + CELLS + 1 and not meta["normalized"]
    assert meta["data_checksum"] == data.checksum
    assert {"scale", "offset", "rank_scale"} <= set(meta["score"]) and meta["score"]["scale"] > 0
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
    encoder = FusionEncoder.load(artifact)
    scale = encoder.rank_scale[(users.uid != 0).astype(int)][:, None]
    expected = np.hstack([scale * raw / np.linalg.norm(raw, axis=1, keepdims=True),
                          cell_features(users.gender, users.age)])
    got = encoder.encode_indices(users.uid, users.gender, users.age, users.occupation)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_inner_product_is_the_model_ranking_score_and_stars_match(artifact, data):
    model, cfg, vocab = load_model(artifact)
    tables = build_tables(vocab, data, cfg.window)
    ids, items = read_item_vectors(artifact)
    encoder = FusionEncoder.load(artifact)
    movies, n = tables.movies, len(ids)
    catalog = [paddle.to_tensor(a) for a in (movies.mid, movies.genres, tables.windows)]
    for row in (0, 17, 123):
        user = tables.users.take(np.full(n, row))
        inputs = [user.uid, user.gender, user.age, user.occupation, movies.mid, movies.genres,
                  tables.windows]
        with paddle.no_grad():
            model_stars = model(*(paddle.to_tensor(a) for a in inputs)).numpy()
            users = model.user(*(paddle.to_tensor(a[:1]) for a in inputs[:4]))
            cells = paddle.to_tensor(cell_features(user.gender[:1], user.age[:1]))
            known = paddle.to_tensor((user.uid[:1] != 0).astype(np.int64))
            ranking = model.rank_logits(users, known, cells, model.movie(*catalog),
                                        catalog[0]).numpy()[0]
        vector = encoder.encode_indices(*(a[:1] for a in (user.uid, user.gender, user.age,
                                                          user.occupation)))[0]
        np.testing.assert_allclose(items @ vector, ranking, atol=1e-4)
        np.testing.assert_allclose(encoder.stars(vector, items), np.clip(model_stars, 1, 5),
                                   atol=1e-4)


def test_predicted_stars_is_the_affine_map_of_the_tower_cosine():
    user_tower, movie_tower = np.array([3.0, 4.0, 0.0]), np.array([0.0, 0.6, 0.8])
    cos = 0.48
    user = np.concatenate([7.0 * user_tower / 5.0, cell_features([1], [3])[0]])
    biases = np.random.default_rng(0).normal(size=(2, CELLS + 1))
    items = np.hstack([np.stack([movie_tower, -movie_tower]), biases])
    np.testing.assert_allclose(predicted_stars(user, items, 2.0, 3.0), [3.0 + 2.0 * cos,
                                                                        3.0 - 2.0 * cos])
    np.testing.assert_allclose(predicted_stars(user, items, 10.0, 3.0), [5.0, 1.0])
    np.testing.assert_allclose(predicted_stars(np.stack([user, user]), items, 2.0, 3.0),
                               [3.96, 2.04])


def test_serving_code_does_not_import_paddle():
    code = ("import sys; import movierec.models.fusion.inference; "
            "sys.exit(int('paddle' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_cold_start_uses_profile_only(artifact, evaluation):
    encoder = FusionEncoder.load(artifact)
    unknown = max(encoder.vocab.user_ids) + 1000
    anonymous = encoder.encode_one(30, "F", 4)
    assert np.array_equal(encoder.encode_one(30, "F", 4, user_id=unknown), anonymous)
    assert not encoder.knows(unknown) and encoder.knows(encoder.vocab.user_ids[0])
    known = encoder.encode_one(30, "F", 4, user_id=encoder.vocab.user_ids[0])
    assert not np.allclose(known, anonymous)
    assert not np.allclose(encoder.encode_one(60, "M", 13), anonymous)
    assert np.linalg.norm(anonymous[:-1 - CELLS]) == pytest.approx(encoder.rank_scale[0],
                                                                    rel=1e-5)
    assert anonymous[-1] == 1.0 and anonymous[-1 - CELLS:-1].sum() == 1.0
    assert evaluation["fusion_user_ids_hidden"]["rmse"] < evaluation["global_mean"]["rmse"] - 0.1


def test_batched_encoding_equals_single_and_is_fast(artifact):
    encoder = FusionEncoder.load(artifact)
    profiles = [Profile(25, "M", 3), Profile(70, "F", 20, 5), Profile(1, "F", 0)]
    batch = encoder.encode(profiles)
    assert batch.shape == (3, 200 + CELLS + 1) and batch.dtype == np.float32
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


def test_stars_of_the_top_ranked_movies(artifact):
    """The ranking is the inner product (what Milvus computes); each hit's stars come from
    the same two vectors and stay on the 1-5 scale."""
    encoder = FusionEncoder.load(artifact)
    _, items = read_item_vectors(artifact)
    user = encoder.encode([Profile(40, "F", 7, 3)])[0]
    top = np.argsort(-(items @ user))[:10]
    stars = encoder.stars(user, items[top])
    assert stars.shape == (10,) and ((stars >= 1) & (stars <= 5)).all()
    np.testing.assert_allclose(stars, predicted_stars(user, items[top], encoder.scale,
                                                      encoder.offset))


def test_evaluate_command_prints_json(artifact, capsys):
    args = _parse("evaluate", "--json", "--artifact", str(artifact))
    assert commands.evaluate(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["unit"] == "stars" and result["test_ratings"] > 0
    assert {"fusion", "fusion_user_ids_hidden", "global_mean", "bias_als"} <= set(result)
    assert "fusion_cold_start" not in result


def test_training_is_reproducible_with_the_seed(tmp_path):
    first = _train(tmp_path / "a", "--max-epochs", "1")
    second = _train(tmp_path / "b", "--max-epochs", "1")
    np.testing.assert_array_equal(read_item_vectors(first)[1], read_item_vectors(second)[1])


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    first = read_metadata(_train(tmp_path, "--max-epochs", "1"))["history"]
    resumed = read_metadata(_train(tmp_path, "--max-epochs", "2", "--resume"))["history"]
    assert [h["epoch"] for h in resumed] == [1, 2]
    assert resumed[0] == first[0]
