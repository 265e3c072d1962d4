"""PinSage's served item-bias weight: the tower's column, the validation fit, the export."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import sparse

from movierec.data.source import load_dataset
from movierec.data.splits import make_split
from movierec.evaluation.protocols import ranking_tasks
from movierec.evaluation.ranking import evaluate
from movierec.evaluation.serving import ItemSpace, pinsage_history
from movierec.models.artifact import read_metadata
from movierec.models.pinsage.aggregation import UserTower, user_scorer
from movierec.models.pinsage.calibration import (
    BETAS,
    POWERS,
    Calibration,
    Calibrations,
    fit_bias_weight,
    fit_both,
)
from movierec.models.pinsage.encoder import PinSageEncoder
from movierec.models.pinsage.export import export
from movierec.models.pinsage.graph import build_training_graph
from movierec.models.pinsage.train import TrainConfig, served_arrays, train

torch.set_num_threads(1)
DATASET = "synthetic-300x400-s0"


@pytest.fixture(scope="module")
def setup():
    data = load_dataset(DATASET)
    split = make_split(data, "recbole_811", seed=7)
    graph = build_training_graph(data, split.train)
    valid, test = ranking_tasks(data, split)
    config = TrainConfig(dim=32, max_epochs=8, patience=8, batch_users=64, seed=1, free_dim=16)
    return data, graph, valid, test, config, train(graph, valid, config, progress=False)


def _sum(metrics: dict) -> float:
    return metrics["recall@10"] + metrics["ndcg@10"]


def test_bias_column_is_scale_times_bag_size_to_a_power():
    rng = np.random.default_rng(0)
    tower = UserTower(rng.normal(size=(6, 4)).astype(np.float32), bias=True,
                      bias_scale=0.5, bias_power=0.5)
    assert tower.vector([1, 2, 3, 4])[-1] == pytest.approx(0.5 * 2.0)
    assert tower.vector([1, 2, 3, 4], [1, 0, 2, 0])[-1] == pytest.approx(0.5 * np.sqrt(2))
    weights = sparse.csr_matrix(np.array([[1, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0],
                                          [0, 3, 0, 0, 0, 0]], np.float32))
    np.testing.assert_allclose(tower.vectors(weights)[:, -1], [1.0, 0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(tower.vectors(weights)[0], tower.vector([0, 2, 3, 4]), atol=1e-6)
    plain = replace(tower, bias_scale=1.0, bias_power=0.0)
    np.testing.assert_array_equal(plain.vectors(weights)[:, -1], [1.0, 1.0, 1.0])


def test_fit_is_the_best_grid_point_of_the_served_scores(setup):
    _, _, valid, _, config, result = setup
    served = served_arrays(result.model, result.export_graphs)
    fitted = fit_bias_weight(served.tower, served.item_vectors, valid, config.aggregation)
    assert fitted.beta0 in BETAS and fitted.power in POWERS
    counts = np.diff(valid.history.indptr)
    assert fitted.reference_size == np.median(counts[counts > 0])

    def served_metrics(calibration: Calibration) -> dict:
        tower = calibration.apply(served.tower)
        return evaluate(user_scorer(tower, served.item_vectors, valid.history,
                                    config.aggregation), valid)
    chosen = served_metrics(fitted)
    assert chosen["recall@10"] == pytest.approx(fitted.valid["recall@10"], abs=1e-6)
    assert chosen["ndcg@10"] == pytest.approx(fitted.valid["ndcg@10"], abs=1e-6)
    as_trained = evaluate(user_scorer(served.tower, served.item_vectors, valid.history,
                                      config.aggregation), valid)
    assert fitted.trained == pytest.approx(as_trained, abs=1e-6)
    alone = fit_bias_weight(served.tower, served.item_vectors, valid, config.aggregation,
                            betas=(1.1,), powers=(0.05,))
    assert (alone.beta0, alone.power) == (1.1, 0.05) and alone.valid == alone.trained
    for beta0 in (BETAS[0], BETAS[-1]):
        for power in (POWERS[0], POWERS[-1]):
            other = served_metrics(replace(fitted, beta0=beta0, power=power))
            assert _sum(other) <= _sum(chosen) + 1e-6


def test_fit_raises_the_weight_when_the_bias_carries_the_signal(setup):
    """Item vectors whose only information is a popularity bias: more weight ranks better."""
    _, _, valid, _, config, _ = setup
    rng = np.random.default_rng(0)
    items = valid.history.shape[1]
    popularity = np.asarray(valid.relevant.sum(axis=0)).ravel() + np.asarray(
        valid.history.sum(axis=0)).ravel() / 10
    vectors = np.concatenate([rng.normal(size=(items, 8)) / 3,
                              np.log1p(popularity)[:, None] / 10], 1).astype(np.float32)
    tower = UserTower(vectors[:, :-1].copy(), bias=True)
    fitted = fit_bias_weight(tower, vectors, valid, config.aggregation)
    assert fitted.beta0 == max(BETAS)
    assert _sum(fitted.valid) > _sum(fitted.trained)


def test_fit_needs_a_bias_column(setup):
    _, _, valid, _, config, _ = setup
    tower = UserTower(np.ones((valid.history.shape[1], 3), np.float32))
    with pytest.raises(ValueError, match="bias"):
        fit_bias_weight(tower, np.ones((valid.history.shape[1], 3), np.float32), valid, "mean")


def test_exported_calibrations_are_what_the_embedder_and_the_evaluation_use(setup, tmp_path):
    data, graph, valid, test, config, result = setup
    served = served_arrays(result.model, result.export_graphs)
    fitted = fit_both(served.tower, served.item_vectors, valid, config.aggregation)
    assert config.aggregation == "rating" and fitted.liked.valid != fitted.history.valid
    fitted = Calibrations(replace(fitted.history, beta0=1.05, power=0.1),
                          replace(fitted.liked, beta0=0.95, power=0.02))
    path = export(result, graph, config, {"dataset": DATASET, "data_checksum": data.checksum},
                  tmp_path, fitted)
    meta = read_metadata(path)
    assert meta["user_tower"]["bias_scale"] == pytest.approx(fitted.history.scale)
    assert meta["user_tower"]["bias_power"] == 0.1
    assert meta["user_tower"]["liked_bias_scale"] == pytest.approx(fitted.liked.scale)
    assert meta["bias_calibration"]["history"]["beta0"] == 1.05
    assert meta["bias_calibration"]["liked"]["power"] == 0.02
    encoder = PinSageEncoder.load(path)
    liked = [5, 9, 12, 40]
    assert encoder.embed_liked(liked)[-1] == pytest.approx(fitted.liked.scale * 4 ** 0.02)
    assert encoder.embed_history(liked, [3, 4, 5, 5])[-1] == pytest.approx(
        fitted.history.scale * 4 ** 0.1)
    rows = test.rows[:5]
    expected = user_scorer(fitted.history.apply(served.tower), served.item_vectors,
                           test.history, config.aggregation)(rows)
    evaluated = pinsage_history(encoder, ItemSpace.load(path, test.movie_ids))(test)(rows)
    np.testing.assert_allclose(evaluated, expected, atol=1e-4)


def test_an_artifact_without_calibration_serves_the_trained_weight(setup, tmp_path):
    data, graph, _, _, config, result = setup
    path = export(result, graph, config, {"dataset": DATASET, "data_checksum": data.checksum},
                  tmp_path)
    encoder = PinSageEncoder.load(path)
    assert "bias_calibration" not in read_metadata(path)
    assert encoder.embed_liked([5, 9, 12])[-1] == 1.0
    assert encoder.embed_history([5, 9, 12], [5, 5, 3])[-1] == 1.0
