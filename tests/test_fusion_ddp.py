"""Data-parallel fusion training (``movierec train fusion --nproc 2``): two real ranks
under ``paddle.distributed.launch`` (gloo over loopback) on small synthetic data.

Noise, for the validation-RMSE comparison: with dropout on, a 2-rank run differs from
the 1-rank run only in its dropout masks (same weights at start, same batches, same id
dropout, same ranking chunks). Across 8 Paddle seeds (initial weights and dropout masks,
same batches) the 1-rank run below gives valid RMSE 0.837 +- 0.017 (sd; range 0.055),
so 0.05 (3 sd) is the tolerance. With dropout off the two runs are the same computation
up to float rounding, so there the parameters themselves must agree.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from process_helpers import alive

paddle = pytest.importorskip("paddle")

from movierec.models import launch  # noqa: E402
from movierec.models.artifact import read_metadata  # noqa: E402
from movierec.models.cli import parser_for  # noqa: E402
from movierec.models.fusion import ddp  # noqa: E402
from movierec.models.fusion.data import batcher_for, build_tables  # noqa: E402
from movierec.models.fusion.features import build_vocab  # noqa: E402
from movierec.models.fusion.model import FusionConfig  # noqa: E402
from movierec.models.fusion.ranking import Ranker, catalog_inputs  # noqa: E402
from movierec.models.fusion.train import Parallel, build_model, gradient_bytes  # noqa: E402

DATASET = "synthetic-300x400-s0"
#: 2 epochs of ~40 steps of 2 x 128 rows (5 of them with a ranking-loss chunk)
RUN = ("--dataset", DATASET, "--max-epochs", "2", "--batch-size", "256", "--no-progress")
EPOCHS = 2
NOISE = 0.05


def _args(root: Path, *extra: str) -> argparse.Namespace:
    parser, _ = parser_for("train", "fusion")
    return parser.parse_args([*RUN, "--artifacts", str(root / "artifacts"), "--checkpoint-dir",
                              str(root / "ckpt"), *extra])


def _versions(root: Path) -> list[Path]:
    folder = root / "artifacts" / "fusion"
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


class Capture(Parallel):
    """The single process, keeping each epoch's parameters."""

    def __init__(self) -> None:
        self.params: dict[int, dict[str, np.ndarray]] = {}

    def epoch_done(self, model, epoch: int, train_mse: float) -> None:
        self.params[epoch] = {n: p.numpy().copy() for n, p in model.named_parameters()}


def _single(root: Path, *extra: str) -> tuple[Path, Capture]:
    from movierec.models.fusion import commands

    capture = Capture()
    assert commands.train(_args(root, *extra), capture) == 0
    (path,) = _versions(root)
    return path, capture


def _two_ranks(root: Path, *extra: str) -> int:
    from movierec.models.fusion import commands

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setenv(ddp.TEST_DIR, str(root / "ranks"))
        return commands.train(_args(root, "--nproc", "2", *extra))


def _rank_files(root: Path, epoch: int) -> list[tuple[dict, dict[str, np.ndarray]]]:
    return [(json.loads((root / "ranks" / f"rank-{r}-epoch-{epoch}.json").read_text()),
             dict(np.load(root / "ranks" / f"rank-{r}-epoch-{epoch}.npz"))) for r in (0, 1)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    assert _two_ranks(root) == 0
    return root


def test_every_rank_holds_the_same_parameters_after_each_epoch(two_ranks):
    for epoch in range(1, EPOCHS + 1):
        (info0, params0), (info1, params1) = _rank_files(two_ranks, epoch)
        assert (info0["world"], info1["world"], info1["rank"]) == (2, 2, 1)
        assert info0["hash"] == info1["hash"]
        assert params0.keys() == params1.keys()
        assert all(np.array_equal(params0[k], params1[k]) for k in params0)
        assert math.isfinite(info0["train_mse"]) and info0["train_mse"] == info1["train_mse"]
    first, last = _rank_files(two_ranks, 1)[0][0], _rank_files(two_ranks, EPOCHS)[0][0]
    assert first["hash"] != last["hash"]


def test_rank_zero_alone_writes_one_artifact_recording_the_world(two_ranks):
    (path,) = _versions(two_ranks)
    meta = read_metadata(path)
    assert (meta["world_size"], meta["per_rank_batch"]) == (2, 128)
    assert [row["epoch"] for row in meta["history"]] == list(range(1, EPOCHS + 1))
    assert all(math.isfinite(row["train_mse"]) and math.isfinite(row["valid_rmse"])
               for row in meta["history"])
    assert meta["allreduce_bytes_per_step"] > 0
    logs = launch.rank_logs(next((two_ranks / "artifacts" / "logs").iterdir()))
    assert [p.name for p in logs] == ["workerlog.0", "workerlog.1"]
    assert f"{meta['allreduce_bytes_per_step']} bytes per step" in logs[0].read_text()


def test_two_ranks_reach_the_single_process_validation_rmse(two_ranks, tmp_path):
    single, _ = _single(tmp_path)
    one = read_metadata(single)["metrics"]["valid_rmse"]
    two = read_metadata(_versions(two_ranks)[0])["metrics"]["valid_rmse"]
    assert abs(two - one) < NOISE, (one, two)


def test_without_dropout_two_ranks_compute_what_one_process_does(tmp_path):
    """Each rank's half batch and half ranking chunk, gradients averaged, the same
    learning-rate decisions: the single process's update, up to float rounding."""
    assert _two_ranks(tmp_path / "two", "--dropout", "0") == 0
    single, capture = _single(tmp_path / "one", "--dropout", "0")
    for epoch in range(1, EPOCHS + 1):
        params = _rank_files(tmp_path / "two", epoch)[0][1]
        for name, value in capture.params[epoch].items():
            np.testing.assert_allclose(params[name], value, atol=2e-3, err_msg=name)
    assert read_metadata(_versions(tmp_path / "two")[0])["metrics"]["valid_rmse"] == \
        pytest.approx(read_metadata(single)["metrics"]["valid_rmse"], abs=1e-3)


def test_a_failed_rank_fails_the_job_with_its_log_and_leaves_no_rank(tmp_path, capfd,
                                                                      monkeypatch):
    monkeypatch.setenv(ddp.FAIL_RANK, "1")
    assert _two_ranks(tmp_path) != 0
    err = capfd.readouterr().err
    assert "rank 1 fails on purpose" in err and "workerlog.1" in err
    pids = [int(p.read_text()) for p in (tmp_path / "ranks").glob("pid-*")]
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)
    assert _versions(tmp_path) == []


# ---- the pieces, in one process ---------------------------------------------------


@pytest.fixture(scope="module")
def setup():
    from movierec.data.movielens import profiled
    from movierec.data.source import load_dataset

    data = profiled(load_dataset(DATASET))
    cfg = FusionConfig()
    vocab = build_vocab(data.ratings, data.movies, data.genres, cfg.title_len)
    tables = build_tables(vocab, data, cfg.window)
    return data, cfg, vocab, tables


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_cut_the_same_batches_into_disjoint_parts(setup, world):
    data, _, _, tables = setup
    batcher = batcher_for(tables, data.ratings.iloc[:1002])
    whole_rng = np.random.default_rng(5)
    whole = list(batcher.epoch(100, whole_rng, 0.3, 0.3))
    parts, states = [], []
    for rank in range(world):
        rng = np.random.default_rng(5)
        parts.append(list(batcher.epoch(100, rng, 0.3, 0.3, (rank, world))))
        states.append(rng.bit_generator.state)
    assert all(len(p) == batcher.steps(100, world) == 11 - (world == 3) for p in parts)
    assert all(state == whole_rng.bit_generator.state for state in states)
    for step, batch in enumerate(whole[:len(parts[0])]):
        shards = [p[step] for p in parts]
        np.testing.assert_array_equal(np.concatenate([s.rating for s in shards]), batch.rating)
        users = np.concatenate([s.users.uid[s.user_index] for s in shards])
        np.testing.assert_array_equal(users, batch.users.uid[batch.user_index])


def test_the_mean_of_the_ranks_ranking_losses_is_the_whole_loss(setup):
    data, cfg, vocab, tables = setup
    paddle.seed(0)
    model = build_model(cfg, vocab, 3.5)
    model.eval()
    ranker = Ranker.build(tables, data.ratings, data.ratings.iloc[:50], 3, 64)
    chunk, catalog = np.arange(len(ranker.fit))[:37], catalog_inputs(tables)
    with paddle.no_grad():
        whole = float(ranker.loss(model, chunk, catalog))
        shards = [float(ranker.loss(model, chunk, catalog, (r, 3))) for r in range(3)]
    assert np.mean(shards) == pytest.approx(whole, rel=1e-5)
    assert gradient_bytes(model) == 4 * sum(p.size for p in model.parameters()
                                            if not p.stop_gradient)


def test_ranks_parse_the_launching_command_line(tmp_path):
    from movierec.models.fusion.commands import rank_argv

    args = _args(tmp_path, "--lr", "0.0013", "--no-learn-affine", "--nproc", "4",
                 "--ips", "10.0.0.1,10.0.0.2", "--data-dir", "rel")
    again = parser_for("train", "fusion")[0].parse_args(rank_argv(args))
    expected = {**vars(args), "nproc": 1, "ips": [], "data_dir": Path("rel").resolve(),
                "artifacts": args.artifacts.resolve()}
    assert vars(again) == expected
    cmd = launch.paddle_command("movierec.models.fusion.ddp", 4, ["--x"], tmp_path,
                                ips=args.ips)
    assert cmd[cmd.index("--ips") + 1] == "10.0.0.1,10.0.0.2"
    assert cmd[-5:] == [launch.sys.executable, "-u", "-m", "movierec.models.fusion.ddp", "--x"]
    assert os.path.basename(cmd[-5]).startswith("python")
