"""SASRec: sequence order, what it learns, the numpy encoder equals torch, the artifact."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from movierec.data.source import load_dataset
from movierec.errors import InvalidArgument
from movierec.evaluation import protocols
from movierec.evaluation.baselines import most_pop
from movierec.evaluation.ranking import evaluate
from movierec.models.artifact import latest, read_metadata
from movierec.models.sasrec import commands
from movierec.models.sasrec.data import (
    GAP_ROWS,
    ItemIndex,
    gap_buckets,
    left_padded,
    sequences,
    shuffle_ties,
    timed_sequences,
)
from movierec.models.sasrec.encoder import SasRecEncoder
from movierec.models.sasrec.train import TrainConfig, last_hidden, task_scorer, train
from movierec.models.user_input import (
    History,
    embed_user_history,
    newest_first,
    oldest_first,
)

torch.set_num_threads(1)
#: a tiny network without the gap table (the chains' gaps carry nothing; the gap table is
#: tested where it decides the next movie)
QUICK = TrainConfig(dim=32, max_len=20, batch=64, max_epochs=12, eval_every=3, patience=2,
                    dropout=0.1, lr=3e-3, time_budget_s=120, warmup_steps=5, gaps=False)


def chain_data(users: int = 200, movies: int = 60, length: int = 15, seed: int = 1,
               gapped: bool = False):
    """Every user watches consecutive movies (k, k+1, ... mod ``movies``) in time order:
    the next movie is fully determined by the last one, popularity is flat. ``gapped``:
    each rating comes in the same second as the one before or an hour later, at random,
    and the next movie is k+1 after a same-second rating, k+2 after an hour: only the
    time since the rating before tells which."""
    base = load_dataset(f"synthetic-{users}x{movies}-s{seed}")
    rng = np.random.default_rng(seed)
    ids = np.sort(base.movies["movie_id"].to_numpy())
    rows = []
    for user in base.users["user_id"]:
        at, when, late = int(rng.integers(len(ids))), 1_000_000, False
        for _ in range(length):
            rows.append((int(user), int(ids[at % len(ids)]), int(rng.integers(1, 6)), when))
            at += 2 if late else 1                  # after this rating's own gap
            late = gapped and bool(rng.integers(2))  # how the next rating comes
            when += 3600 if late else (0 if gapped else 60)
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    for column in ratings:
        ratings[column] = ratings[column].astype(base.ratings[column].dtype)
    return replace(base, ratings=ratings)


@pytest.fixture(scope="module")
def chain():
    data = chain_data()
    built = protocols.build(data, "leave_last_out", 2026)
    index = ItemIndex.of(data.movies["movie_id"])
    result = train(timed_sequences(built.split.train, index), index, built.valid, QUICK,
                   progress=False)
    return data, built, index, result


def test_sequences_are_the_catalog_order_reversed() -> None:
    frame = pd.DataFrame({"user_id": [1, 1, 1, 1, 2], "movie_id": [20, 10, 30, 40, 10],
                          "rating": [5, 4, 3, 2, 1], "timestamp": [5, 7, 5, 1, 3]})
    index = ItemIndex.of([10, 20, 30, 40])
    # movies 20 and 30 share a second: they stay in the order they were recorded
    assert oldest_first(frame)["movie_id"].tolist() == [40, 20, 30, 10, 10]
    assert oldest_first(frame.iloc[::-1])["movie_id"].tolist() == [40, 20, 30, 10, 10]
    seqs = sequences(frame, index)
    assert seqs[1].tolist() == [4, 2, 3, 1] and seqs[2].tolist() == [1]
    listed = newest_first(frame[frame.user_id == 1])
    catalog = History.of(listed.movie_id, listed.rating, listed.timestamp).newest(10)
    assert catalog.movie_ids.tolist() == [10, 30, 20, 40]
    assert index.lookup(catalog.movie_ids)[::-1].tolist() == seqs[1].tolist()
    assert left_padded([np.array([1, 2, 3])], 5).tolist() == [[0, 0, 1, 2, 3]]
    assert left_padded([np.array([1, 2, 3])], 2).tolist() == [[2, 3]]
    assert index.lookup([20, 99]).tolist() == [2, 0]


def test_gap_rows_double_from_the_same_second_and_pad_with_zero() -> None:
    times = np.array([100, 100, 101, 102, 105, 100 + 3600, 100 + 3600])
    assert gap_buckets(times).tolist() == [1, 2, 3, 3, 4, 13, 2]
    assert gap_buckets(None, 3).tolist() == [1, 1, 1]           # a list given without times
    assert gap_buckets(np.array([5, 3])).tolist() == [1, 2]     # out of order: no gap
    assert gap_buckets(np.array([0, 2 ** 40])).max() == GAP_ROWS - 1


def test_the_time_since_the_rating_before_is_learnt_when_it_decides_the_next() -> None:
    """Whether the next movie is k+1 or k+2 depends only on whether the last rating came
    in the same second as the one before: the gap table learns it, the items cannot."""
    data = chain_data(gapped=True)
    built = protocols.build(data, "leave_last_out", 2026)
    index = ItemIndex.of(data.movies["movie_id"])
    scores = {}
    for gaps in (False, True):
        config = replace(QUICK, gaps=gaps, max_epochs=100, eval_every=10, patience=10)
        result = train(timed_sequences(built.split.train, index), index, built.valid, config,
                       progress=False)
        items = result.model.item_table().detach().numpy()
        scorer = task_scorer(lambda s, t, m=result.model: last_hidden(m, s, t), items, index,
                             built.test)
        scores[gaps] = evaluate(scorer, built.test)["ndcg@10"]
    # without the gap the best is a coin between k+1 and k+2: NDCG@10 about (1 + 1/log2 3) / 2
    assert scores[True] >= 0.95 and scores[False] <= 0.9


def test_it_learns_what_comes_next_where_popularity_cannot(chain) -> None:
    data, built, index, result = chain
    items = result.model.item_table().detach().numpy()
    scorer = task_scorer(lambda s, t: last_hidden(result.model, s, t), items, index, built.test)
    ours = evaluate(scorer, built.test)
    popular = evaluate(most_pop(built.train)(built.test), built.test)
    assert ours["recall@10"] >= 0.9 > 0.5 > popular["recall@10"]
    assert result.best_epoch > 0 and result.best_valid["ndcg@10"] > 0.5


def test_the_numpy_encoder_is_the_torch_network(chain, tmp_path) -> None:
    data, built, index, result = chain
    from movierec.models.sasrec.export import export
    trained = np.ones(index.size, bool)
    path = export(result, QUICK, {"dataset": data.name, "split": "leave_last_out"}, trained,
                  data.movies, root=tmp_path)
    encoder = SasRecEncoder.load(path)
    assert encoder.dim == QUICK.dim and read_metadata(path)["dims"]["max_len"] == 20
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, index.size + 1, n) for n in (1, 7, 20, 45)]  # 45 > max_len
    torch_vectors = last_hidden(result.model, seqs)
    numpy_vectors = np.stack([encoder.weights.encode(s) for s in seqs])
    np.testing.assert_allclose(numpy_vectors, torch_vectors, atol=2e-4)
    np.testing.assert_allclose(read_item_vectors_of(path), encoder.vectors)
    # EmbedHistory's input (newest first, the embedder's selection) is the sequence reversed
    ids = index.movie_ids[seqs[1] - 1]
    history = History.of(ids, np.full(len(ids), 4.0), np.arange(len(ids)))
    vector, used = embed_user_history(encoder, history, 1000)
    np.testing.assert_allclose(vector, numpy_vectors[1], atol=1e-6)
    assert used == ids[::-1].tolist()
    np.testing.assert_allclose(encoder.embed_liked(ids.tolist()), numpy_vectors[1], atol=1e-6)
    with pytest.raises(InvalidArgument):
        encoder.embed_liked([10 ** 6])
    with pytest.raises(InvalidArgument):
        encoder.embed_liked([])


def read_item_vectors_of(path):
    return np.load(path / "item_vectors.npy")


def _train_args(tmp_path, **overrides) -> argparse.Namespace:
    """``movierec train sasrec``'s arguments for a tiny model on synthetic data."""
    return argparse.Namespace(**{
        "dataset": "synthetic-120x80-s3", "data_dir": None, "seed": 5, "artifacts": tmp_path,
        "split": "leave_last_out", "dim": 16, "layers": 1, "heads": 1, "max_len": 16,
        "ffn": 1, "batch": 64, "max_epochs": 2, "patience": 2, "eval_every": 1,
        "dropout": 0.1, "lr": 1e-3, "weight_decay": 0.0, "time_budget": 1.0,
        "train_seed": None, "threads": 1, "no_progress": True,
        "checkpoint_dir": str(tmp_path / "ckpt"), "with_valid_epochs": 0, **overrides})


def test_train_and_evaluate_commands_round_trip(tmp_path, capsys) -> None:
    args = _train_args(tmp_path, heads=2)
    assert commands.train(args) == 0
    path = latest("sasrec", tmp_path)
    meta = read_metadata(path)
    assert meta["split"] == "leave_last_out" and meta["dims"]["heads"] == 2
    assert "content_map" in meta and (tmp_path / "ckpt" / "best.pt").is_file()
    capsys.readouterr()
    args = argparse.Namespace(dataset="synthetic-120x80-s3", data_dir=None, seed=5,
                              artifacts=tmp_path, artifact=None, protocol="leave_last_out",
                              no_baselines=False, json=True, threads=1, no_progress=True)
    assert commands.evaluate(args) == 0
    out = capsys.readouterr().out
    rows = json.loads(out)["rows"]
    assert set(rows) >= {"sasrec", "mostpop", "ease"}
    # the evaluation scores the served (numpy) encoder: its test metrics equal training's
    assert rows["sasrec"]["ndcg@10"] == pytest.approx(meta["metrics"]["test"]["ndcg@10"],
                                                      abs=1e-4)


def test_a_refit_trains_on_the_validation_ratings_for_the_epochs_it_is_given(chain) -> None:
    """``--with-valid-epochs E``: every validation rating becomes training data, exactly E
    epochs run with no validation, and the refit still predicts the test items."""
    data, built, index, _ = chain
    config = replace(QUICK, fixed_epochs=QUICK.max_epochs - 1)
    seen = pd.concat([built.split.train, built.split.valid])
    result = train(timed_sequences(seen, index), index, None, config, progress=False)
    assert [e["epoch"] for e in result.log] == list(range(1, QUICK.max_epochs))
    assert result.best_valid == {}
    items = result.model.item_table().detach().numpy()
    scorer = task_scorer(lambda s, t: last_hidden(result.model, s, t), items, index, built.test)
    assert evaluate(scorer, built.test)["recall@10"] >= 0.9
    with pytest.raises(ValueError, match="fixed_epochs"):
        train(timed_sequences(seen, index), index, None, QUICK, progress=False)


def test_a_refit_artifact_reports_no_validation(tmp_path, capsys) -> None:
    """An artifact trained on the validation ratings says so, and its evaluation shows
    no validation metrics (they would be measured on its own training data)."""
    args = _train_args(tmp_path, with_valid_epochs=2)
    assert commands.train(args) == 0
    meta = read_metadata(latest("sasrec", tmp_path))
    assert meta["fit_on"] == "train+valid" and meta["valid_metrics"] == {}
    capsys.readouterr()
    args = argparse.Namespace(dataset="synthetic-120x80-s3", data_dir=None, seed=5,
                              artifacts=tmp_path, artifact=None, protocol="leave_last_out",
                              no_baselines=True, json=False, threads=1, no_progress=True)
    assert commands.evaluate(args) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("SASRec"))
    assert "–" in row


def test_batches_cover_every_newest_window_once_padded_to_their_longest() -> None:
    from movierec.models.sasrec.train import _batches
    rng = np.random.default_rng(0)
    seqs = [(np.arange(1, n + 1), np.arange(n), np.ones(n, np.int64))
            for n in rng.integers(2, 40, 50)]
    config = replace(QUICK, batch=8, max_len=20, gaps=True)
    seen = []
    for inputs, targets, gaps in _batches(seqs, config, rng):
        assert gaps.shape == inputs.shape and ((gaps > 0) == (inputs > 0)).all()
        assert inputs.shape == targets.shape and inputs.shape[1] <= 20
        rows = [t[t > 0] for t in targets.numpy()]
        assert max(len(r) for r in rows) == inputs.shape[1]        # no all-padding column
        for i, t in zip(inputs.numpy(), targets.numpy(), strict=True):
            assert (t[t > 0] == i[i > 0] + 1).all()               # the next item is the target
        seen += [int(r[-1]) for r in rows]
    assert sorted(seen) == sorted(len(s) for s, _, _ in seqs)        # each user once, newest
    assert next(_batches(seqs, replace(config, gaps=False), rng))[2] is None   # no gap table
    cropped = replace(config, crop=1.0)
    long = [(np.arange(1, 101), np.arange(100), np.ones(100, np.int64))] * 40
    ends = [int(t[t > 0][-1]) for _, targets, _ in _batches(long, cropped, rng)
            for t in targets.numpy()]
    assert min(ends) >= 21 and len(set(ends)) > 5                   # older windows too


def test_ties_are_shuffled_inside_their_second_only() -> None:
    rng = np.random.default_rng(1)
    items, times = np.arange(1, 9), np.array([1, 1, 1, 2, 3, 3, 3, 3])
    orders = {tuple(shuffle_ties(items, times, rng)) for _ in range(50)}
    assert len(orders) > 10
    for order in orders:
        order = np.array(order)
        assert set(order[:3]) == {1, 2, 3} and order[3] == 4 and set(order[4:]) == {5, 6, 7, 8}


def test_a_longer_horizon_targets_an_item_up_to_that_many_steps_ahead() -> None:
    from movierec.models.sasrec.train import _batches
    rng = np.random.default_rng(3)
    seqs = [(np.arange(1, 61), np.arange(60), np.ones(60, np.int64))] * 8
    config = replace(QUICK, batch=8, max_len=20, horizon=5, shuffle_ties=False)
    steps = set()
    for inputs, targets, _ in _batches(seqs, config, rng):
        assert inputs.shape == (8, 20)
        ahead = (targets - inputs).numpy()
        assert ahead.min() >= 1 and ahead.max() <= 5 and targets.numpy().max() == 60
        steps |= set(ahead[:, :10].ravel().tolist())
    assert steps == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("positions", ["newest", "oldest"])
def test_both_position_alignments_encode_in_numpy_as_in_torch(positions) -> None:
    from movierec.models.sasrec.encoder import Weights
    from movierec.models.sasrec.model import Dims, SasRec
    torch.manual_seed(3)
    model = SasRec(Dims(items=30, dim=16, layers=2, heads=2, max_len=12, positions=positions))
    with torch.no_grad():                       # positions must matter to be tested
        model.positions.weight.normal_()
    arrays = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    weights = Weights(arrays, heads=2, layers=2, max_len=12, positions=positions)
    rng = np.random.default_rng(1)
    seqs = [rng.integers(1, 31, n) for n in (1, 5, 12, 20)]            # 20 > max_len
    np.testing.assert_allclose(np.stack([weights.encode(s) for s in seqs]),
                               last_hidden(model, seqs), atol=2e-4)
    short = last_hidden(model, [seqs[1]])
    other = "oldest" if positions == "newest" else "newest"
    assert not np.allclose(Weights(arrays, 2, 2, 12, other).encode(seqs[1]), short[0],
                           atol=1e-3)


def test_the_gap_table_encodes_in_numpy_as_in_torch_and_as_the_embedder_serves() -> None:
    from movierec.models.sasrec.encoder import Weights
    from movierec.models.sasrec.model import Dims, SasRec
    torch.manual_seed(4)
    model = SasRec(Dims(items=30, dim=16, layers=2, heads=2, max_len=12, gaps=True))
    arrays = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    weights = Weights(arrays, heads=2, layers=2, max_len=12)
    rng = np.random.default_rng(2)
    seqs = [rng.integers(1, 31, n) for n in (1, 5, 12, 20)]            # 20 > max_len
    times = [1_000_000 + np.cumsum(rng.choice([0, 1, 5000, 10 ** 6], len(s))) for s in seqs]
    numpy_vectors = np.stack([weights.encode(s, t) for s, t in zip(seqs, times, strict=True)])
    np.testing.assert_allclose(numpy_vectors, last_hidden(model, seqs, times), atol=2e-4)
    # the times are read; without them both read the "no gap known" row alike
    assert not np.allclose(weights.encode(seqs[3]), numpy_vectors[3], atol=1e-3)
    np.testing.assert_allclose(weights.encode(seqs[3]), last_hidden(model, [seqs[3]])[0],
                               atol=2e-4)
    # EmbedHistory: the catalog's newest-first ratings with their times
    encoder = SasRecEncoder(np.arange(1, 31) * 10, weights)
    ids = (seqs[3] * 10)[::-1]
    history = History.of(ids, np.full(len(ids), 4.0), times[3][::-1])
    vector, used = embed_user_history(encoder, history, 1000)
    np.testing.assert_allclose(vector, numpy_vectors[3], atol=1e-6)
