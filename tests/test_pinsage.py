"""PinSage: dgl import shim, sampler, training, user tower, export round trip, inference."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from movierec.compat.dgl import import_dgl
from movierec.data.source import load_dataset
from movierec.data.splits import make_split
from movierec.errors import InvalidArgument
from movierec.evaluation.protocols import ranking_tasks
from movierec.evaluation.ranking import evaluate
from movierec.evaluation.serving import ItemSpace, pinsage_history
from movierec.models.artifact import latest, normalize, read_metadata
from movierec.models.pinsage import commands
from movierec.models.pinsage.aggregation import UserTower, history_matrix, user_scorer
from movierec.models.pinsage.encoder import PinSageEncoder
from movierec.models.pinsage.export import export
from movierec.models.pinsage.graph import build_training_graph
from movierec.models.pinsage.model import UserTower as TorchTower
from movierec.models.pinsage.sampler import (
    HistorySplit,
    NeighbourSampler,
    UserBatch,
    WalkConfig,
    split_histories,
)
from movierec.models.pinsage.train import (
    TrainConfig,
    Trainer,
    build_model,
    item_vectors,
    served_arrays,
    softmax_loss,
    train,
)

torch.set_num_threads(1)
DATASET = "synthetic-300x400-s0"
COLD = np.array([3, 77, 250])  # movie ids whose interactions are dropped from training


@pytest.fixture(scope="module")
def setup():
    data = load_dataset(DATASET)
    split = make_split(data, "recbole_811", seed=7)
    train_part = split.train[~split.train["movie_id"].isin(COLD)]
    graph = build_training_graph(data, train_part)
    valid, test = ranking_tasks(data, split)
    return data, graph, valid, test


SMALL = {"dim": 32, "max_epochs": 12, "patience": 12, "batch_users": 64, "seed": 1,
         "free_dim": 16}
#: the original design: input = output = unit GNN vectors, no bias, cosine / temperature
SHARED = {"split_roles": False, "item_bias": False, "user_layers": 0, "pool": "l2",
          "cosine": True, "free_dim": 0, "input_scale": False}
#: every part of the user tower switched on
TOWER = {"split_roles": True, "item_bias": True, "user_layers": 1, "pool": "sqrt",
         "cosine": False, "temperature": 1.0, "free_shared": False, "free_bias": True,
         "free_decay": 0.1, "weight_decay": 0.01, "per_target": False, "input_scale": True}


@pytest.fixture(scope="module")
def trained(setup):
    """The default configuration."""
    _, graph, valid, _ = setup
    config = TrainConfig(**SMALL)
    return config, train(graph, valid, config, progress=False)


@pytest.fixture(scope="module")
def shared(setup):
    _, graph, valid, _ = setup
    config = TrainConfig(**{**SMALL, **SHARED})
    return config, train(graph, valid, config, progress=False)


@pytest.fixture(scope="module")
def towered(setup):
    _, graph, valid, _ = setup
    config = TrainConfig(**{**SMALL, **TOWER})
    return config, train(graph, valid, config, progress=False)


def test_import_dgl_is_quiet_and_uses_pytorch(tmp_path):
    code = "from movierec.compat.dgl import import_dgl; print(import_dgl().backend.backend_name)"
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("DGLBACKEND", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True, cwd=Path(__file__).parents[1])
    assert done.stdout.strip() == "pytorch"
    assert "backend" not in done.stderr.lower()
    assert not (tmp_path / ".dgl").exists()
    assert import_dgl().__version__.startswith("1.1")


def test_serving_imports_neither_torch_nor_dgl():
    code = ("import sys, movierec.models.pinsage.encoder; "
            "print(sorted({'torch', 'dgl', 'scipy'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).parents[1])
    assert done.stdout.strip() == "[]"


def test_sampler_gives_weighted_cowatched_neighbours(setup):
    _, graph, _, _ = setup
    import_dgl().seed(0)
    frontier = NeighbourSampler(graph.graph, WalkConfig(num_random_walks=30,
                                                        num_neighbors=5)).sample()
    src, dst = (t.numpy() for t in frontier.edges())
    weights = frontier.edata["weights"].numpy()
    assert frontier.num_nodes() == len(graph.movie_ids)
    assert len(src) > 0 and (weights >= 1).all() and weights.max() > 1
    assert (src != dst).all()
    assert np.bincount(dst, minlength=frontier.num_nodes()).max() <= 5
    binary = (graph.history > 0).astype(np.float32)
    co = binary.T @ binary
    reachable = (co @ co).toarray() > 0  # two movie -> user -> movie traversals
    assert reachable[src, dst].all()
    cold = np.flatnonzero(~graph.features.has_edges)
    assert not np.isin(dst, cold).any() and not np.isin(src, cold).any()


def _split(graph, split: HistorySplit, count: int = 40):
    rows = history_matrix(graph.history, "mean")[:count]
    batch = split_histories(rows, split, np.random.default_rng(0), graph.stamps[:count])
    inputs = batch.inputs.to_dense().numpy() > 0
    return rows.toarray() > 0, inputs, batch.seen.numpy(), batch.targets.numpy() > 0


def test_split_histories_keeps_inputs_and_targets(setup):
    _, graph, _, _ = setup
    full, inputs, seen, targets = _split(graph, HistorySplit(target_frac=0.2))
    assert (inputs.sum(1) >= 1).all() and (targets.sum(1) >= 1).all()
    assert (seen == inputs).all() and not (inputs & targets).any()
    assert ((inputs | targets) == full).all()
    assert 0.1 < targets.sum() / full.sum() < 0.3


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_targets_weigh_their_rating_weight_to_a_power(setup, power):
    _, graph, _, _ = setup
    weights = history_matrix(graph.history, "rating")[:40]
    batch = split_histories(weights, HistorySplit(target_power=power), np.random.default_rng(0),
                            graph.stamps[:40])
    targets = batch.targets.numpy()
    held = targets > 0
    np.testing.assert_allclose(targets[held], weights.toarray()[held] ** power, rtol=1e-6)
    assert power == 0.0 or len(np.unique(targets[held])) > 1


def test_short_inputs_are_the_earliest_items(setup):
    _, graph, _, _ = setup
    full, inputs, _, targets = _split(graph, HistorySplit(short_frac=1.0, short_len=3))
    stamps = graph.stamps[:len(full)].toarray()
    assert (inputs.sum(1) == np.minimum(3, full.sum(1) - 1)).all()
    assert ((inputs | targets) == full).all()
    for row in range(len(full)):
        assert stamps[row][inputs[row]].max() <= stamps[row][targets[row]].min()


def _test_metrics(model, graphs, test, aggregation: str) -> dict:
    served = served_arrays(model, graphs)
    return evaluate(user_scorer(served.tower, served.item_vectors, test.history, aggregation),
                    test)


@pytest.mark.parametrize("fixture", ["trained", "shared", "towered"])
def test_training_improves_over_the_untrained_model(setup, fixture, request):
    _, graph, _, test = setup
    config, result = request.getfixturevalue(fixture)
    losses = [entry["loss"] for entry in result.log]
    assert losses[-1] < losses[0]
    model = _test_metrics(result.model, result.export_graphs, test, config.aggregation)
    untrained = Trainer(graph, config)
    before = _test_metrics(untrained.model, untrained.export_graphs, test, config.aggregation)
    rng = np.random.default_rng(0)
    chance = evaluate(lambda rows: rng.random((len(rows), len(test.movie_ids))), test)
    for metric in ("recall@10", "ndcg@10"):
        assert model[metric] > 1.5 * before[metric]
        assert model[metric] > 3 * chance[metric]


def test_margin_objective_lowers_loss(setup):
    _, graph, valid, _ = setup
    config = TrainConfig(dim=16, objective="margin", max_epochs=6, patience=6, batch_items=64)
    log = train(graph, valid, config, progress=False).log
    assert log[-1]["loss"] < log[0]["loss"]


def test_export_round_trip_covers_every_movie(setup, shared, tmp_path):
    data, graph, _, _ = setup
    config, result = shared
    path = export(result, graph, config, {"dataset": DATASET, "data_checksum": data.checksum},
                  tmp_path)
    encoder = PinSageEncoder.load(root=tmp_path)
    expected = item_vectors(result.model, result.export_graphs)
    assert np.array_equal(encoder.movie_ids, np.sort(data.movies["movie_id"].to_numpy()))
    np.testing.assert_array_equal(encoder.vectors, normalize(expected))  # what was written
    np.testing.assert_allclose(encoder.vectors, expected, atol=1e-6)
    reloaded = build_model(graph, config)
    reloaded.load_state_dict(torch.load(path / "model.pt"))
    np.testing.assert_array_equal(item_vectors(reloaded, result.export_graphs), expected)
    np.testing.assert_allclose(np.linalg.norm(encoder.vectors, axis=1), 1.0, atol=1e-5)
    meta = read_metadata(path)
    assert meta["cold_movies"]["count"] == len(COLD)
    assert json.loads((path / "cold_movie_ids.json").read_text()) == COLD.tolist()
    assert meta["aggregation"] == config.aggregation and meta["dim"] == 32
    assert meta["data_checksum"] == data.checksum and meta["training"]["seconds"] > 0
    assert np.isfinite(encoder.vectors[encoder.rows(COLD)]).all()


def test_export_round_trip_with_a_user_tower(setup, towered, tmp_path):
    data, graph, _, _ = setup
    config, result = towered
    path = export(result, graph, config, {"dataset": DATASET, "data_checksum": data.checksum},
                  tmp_path)
    served = served_arrays(result.model, result.export_graphs)
    encoder = PinSageEncoder.load(path)
    meta = read_metadata(path)
    width = config.dim + config.free_dim
    assert meta["normalized"] is False and meta["dim"] == width + 1
    assert meta["user_tower"]["pool"] == "sqrt" and meta["user_tower"]["layers"] == 1
    np.testing.assert_array_equal(encoder.vectors, served.item_vectors)
    reloaded = build_model(graph, config)
    reloaded.load_state_dict(torch.load(path / "model.pt"))
    again = served_arrays(reloaded, result.export_graphs)
    np.testing.assert_array_equal(again.tower.inputs, encoder.tower.inputs)
    assert not np.allclose(np.linalg.norm(encoder.vectors, axis=1), 1.0)
    liked = [5, 9, 12]
    vector = encoder.embed_liked(liked)
    assert vector.shape == (width + 1,) and vector[-1] == 1.0
    np.testing.assert_allclose(vector, served.tower.vector(encoder.rows(liked)), atol=1e-6)


def test_per_target_loss_weighs_long_histories_more(setup):
    _, graph, _, _ = setup
    model = build_model(graph, TrainConfig(**SMALL))
    tables = model.tables(model(NeighbourSampler(graph.graph, WalkConfig()).layers(2)))
    items = tables.inputs.shape[0]
    inputs = torch.zeros(2, items)
    inputs[:, 0] = 1.0
    targets = torch.zeros(2, items)
    targets[0, 1] = 1.0
    targets[1, 2:12] = 1.0
    batch = UserBatch(inputs.to_sparse(), inputs > 0, targets)
    per_user = softmax_loss(model, tables, batch, 0.15, per_target=False)
    per_target = softmax_loss(model, tables, batch, 0.15, per_target=True)
    users = model.user_tower(batch.inputs, tables.inputs)
    logits = (tables.scores(users) / 0.15).masked_fill(batch.seen, -torch.inf)
    log_prob = torch.log_softmax(logits, 1)
    first, second = -log_prob[0, 1], -log_prob[1, 2:12].mean()
    torch.testing.assert_close(per_user, (first + second) / 2)
    torch.testing.assert_close(per_target, (first + 10 * second) / 11)


def test_free_columns_and_input_scales_are_learned_and_neutral_for_cold_movies(setup, trained):
    data, _, _, _ = setup
    config, result = trained
    served = served_arrays(result.model, result.export_graphs)
    ids = np.sort(data.movies["movie_id"].to_numpy())
    free = served.item_vectors[:, config.dim:config.dim + config.free_dim]
    cold = np.isin(ids, COLD)
    assert served.item_vectors.shape[1] == config.dim + config.free_dim + 1
    np.testing.assert_array_equal(free[cold], 0.0)
    assert np.abs(free[~cold]).mean() > 0.01
    scale = np.exp(result.model.input_scale.detach().numpy())
    np.testing.assert_allclose(served.tower.inputs, served.item_vectors[:, :-1] * scale[:, None],
                               rtol=1e-5, atol=1e-7)
    assert np.abs(np.log(scale[~cold])).max() > 1e-3  # each movie's weight in a bag is learned
    np.testing.assert_array_equal(scale[cold], 1.0)


@pytest.mark.parametrize("pool", ["l2", "sqrt", "mean"])
@pytest.mark.parametrize("layers", [0, 2])
def test_torch_and_numpy_user_towers_agree(pool, layers):
    torch.manual_seed(0)
    tower = TorchTower(6, layers, pool, unit=layers == 2)
    inputs = torch.randn(10, 6)
    weights = torch.tensor([[1.0, 0, 2, 0, 0, 0, 0, 0, 0, 4], [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]])
    expected = tower(weights.to_sparse(), inputs).detach().numpy()
    numpy_tower = UserTower(inputs.numpy(), pool, tower.arrays(), bias=True, unit=tower.unit)
    for row in range(2):
        cols = np.flatnonzero(weights[row].numpy())
        got = numpy_tower.vector(cols, weights[row].numpy()[cols])
        np.testing.assert_allclose(got[:-1], expected[row], atol=1e-5)
        assert got[-1] == 1.0


@pytest.mark.parametrize("fixture", ["trained", "shared", "towered"])
def test_serving_vector_is_the_evaluated_one(setup, fixture, request, tmp_path):
    data, graph, _, test = setup
    config, result = request.getfixturevalue(fixture)
    path = export(result, graph, config, {"dataset": DATASET, "data_checksum": data.checksum},
                  tmp_path)
    served = served_arrays(result.model, result.export_graphs)
    encoder = PinSageEncoder.load(path)
    rows = test.rows[:5]
    trained_scores = user_scorer(served.tower, served.item_vectors, test.history,
                                 config.aggregation)(rows)
    evaluated = pinsage_history(encoder, ItemSpace.load(path, test.movie_ids))(test)(rows)
    np.testing.assert_allclose(evaluated, trained_scores, atol=1e-4)
    history = test.history[rows[0]]
    user = encoder.embed_history(test.movie_ids[history.indices], history.data)
    np.testing.assert_allclose(encoder.vectors @ user, trained_scores[0], atol=1e-4)


def test_encoder_aggregates_and_ranks(setup, shared):
    _, graph, _, _ = setup
    _, result = shared
    encoder = PinSageEncoder(graph.movie_ids, item_vectors(result.model, result.export_graphs))
    liked = [5, 9, 12]
    mean = encoder.vectors[encoder.rows(liked)].mean(0)
    np.testing.assert_allclose(encoder.embed_liked(liked), mean / np.linalg.norm(mean), atol=1e-6)
    weighted = encoder.embed_liked(liked, weights=[1, 0, 0])
    np.testing.assert_allclose(weighted, encoder.vectors[encoder.rows([5])[0]], atol=1e-6)
    np.testing.assert_allclose(encoder.embed_liked(liked, weights=[2, 2, 2]),
                               encoder.embed_liked(liked), atol=1e-6)


def test_unknown_liked_id_is_invalid_argument(setup, trained):
    _, graph, _, _ = setup
    _, result = trained
    encoder = PinSageEncoder(graph.movie_ids, item_vectors(result.model, result.export_graphs))
    with pytest.raises(InvalidArgument) as error:
        encoder.embed_liked([5, 999_999])
    assert error.value.field == "liked_movie_ids" and "999999" in str(error.value)
    with pytest.raises(InvalidArgument):
        encoder.embed_liked([])
    with pytest.raises(InvalidArgument):
        encoder.embed_liked([5, 9], weights=[1.0])


def test_commands_train_then_evaluate(tmp_path, capsys):
    parser = _with_common(argparse.ArgumentParser(), evaluate=False)
    commands.add_train_args(parser)
    args = parser.parse_args(["--dataset", DATASET, "--artifacts", str(tmp_path), "--dim", "16",
                              "--max-epochs", "3", "--no-progress", "--checkpoint-dir",
                              str(tmp_path / "ckpt")])
    assert commands.train(args) == 0
    assert (tmp_path / "ckpt" / "best.pt").is_file()
    meta = read_metadata(latest("pinsage", tmp_path))
    for fit, prefix in ((meta["bias_calibration"]["history"], "bias"),
                        (meta["bias_calibration"]["liked"], "liked_bias")):
        assert fit["beta0"] * fit["reference_size"] ** -fit["power"] == pytest.approx(
            meta["user_tower"][f"{prefix}_scale"])
        assert meta["user_tower"][f"{prefix}_power"] == fit["power"]
    eval_parser = _with_common(argparse.ArgumentParser(), evaluate=True)
    commands.add_evaluate_args(eval_parser)
    eval_args = eval_parser.parse_args(["--dataset", DATASET, "--artifacts", str(tmp_path),
                                        "--json", "--bpr-epochs", "2"])
    capsys.readouterr()
    assert commands.evaluate(eval_args) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["rows"]) == {"pinsage", "mostpop", "recentpop", "grouppop", "itemknn",
                                   "ease", "bpr"}
    assert 0 <= report["rows"]["pinsage"]["recall@10"] <= 1


def test_cold_start_split_trains_on_first_movies():
    parser = _with_common(argparse.ArgumentParser(), evaluate=False)
    commands.add_train_args(parser)
    warm = commands._config(parser.parse_args([]))
    cold = commands._config(parser.parse_args(["--split", "users_80_10_10"]))
    chosen = commands._config(parser.parse_args(["--split", "users_80_10_10",
                                                 "--short-frac", "0.3"]))
    assert warm == TrainConfig(seed=warm.seed)
    assert cold.short_frac == 1.0 and chosen.short_frac == 0.3
    assert warm.seed == 2026  # the split's seed, unless the training has its own
    assert commands._config(parser.parse_args(["--train-seed", "7"])).seed == 7


def _with_common(parser: argparse.ArgumentParser, evaluate: bool) -> argparse.ArgumentParser:
    """The flags movierec/cli.py adds before calling the model's add_*_args."""
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--artifacts", type=Path, default=None)
    if evaluate:
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--artifact", type=Path, default=None)
    return parser
