"""Training loop: Adam on squared error in stars plus ``rank_weight`` times the ranking
loss (:mod:`.ranking`), early stopping on the holdout slice's RMSE.

The validation slice is carved out of the training split with
:func:`movierec.data.splits.holdout`; after every epoch (its history row: losses,
``seconds`` since the start, ``epoch_seconds`` of the training pass) the model is scored on it,
the best weights are checkpointed (``best.pdparams``) together with a resumable
``last`` state (weights, optimizer, batch-order generator; dropout masks are not
replayed), the learning rate is multiplied by ``lr_decay`` after an epoch without
improvement, and training stops after ``patience`` epochs without improvement,
after ``max_epochs`` epochs, or when the wall-clock budget ``max_minutes`` runs out.
The same seed, data and config reproduce the same weights.

The loop is also the collective data-parallel one (:mod:`.ddp`): a :class:`Parallel`
says which rank of how many this process is. Every rank cuts the same batches (same
seed) and trains on its part of each (``batch_size`` is the global batch), the wrapped
:class:`TrainStep` all-reduces the gradients, rank 0 alone validates, checkpoints and
decides on the learning rate and stopping, and the ranks adopt its decisions. The base
:class:`Parallel` is the single process, where every hook does nothing.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from movierec.compat.paddle import paddle
from movierec.data.movielens import MovieLens
from movierec.data.splits import holdout
from movierec.models.fusion.baselines import scores
from movierec.models.fusion.data import Batch, Batcher, Tables, batcher_for, build_tables
from movierec.models.fusion.evaluate import hidden_ids_key
from movierec.models.fusion.features import Vocab, build_vocab
from movierec.models.fusion.model import FusionConfig, FusionModel
from movierec.models.fusion.ranking import Ranker, catalog_inputs, cell_likes, rank_targets


@dataclass
class TrainResult:
    """A trained model with everything needed to evaluate and export it."""

    model: FusionModel
    config: FusionConfig
    vocab: Vocab
    tables: Tables
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    valid_rmse: float = float("inf")
    seconds: float = 0.0


def use_cpu(threads: int = 1) -> None:
    """Run Paddle on ``threads`` CPU threads."""
    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    """Seed Paddle's, Python's and numpy's global generators."""
    paddle.seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def build_model(cfg: FusionConfig, vocab: Vocab, mean_rating: float) -> FusionModel:
    return FusionModel(cfg, vocab.num_users, vocab.num_movies, len(vocab.genres),
                       vocab.num_words, mean_rating)


class Parallel:
    """This process's part in training: the single process (every hook a no-op).

    :class:`movierec.models.fusion.ddp.Collective` is rank ``rank`` of ``world``.
    """

    rank: int = 0
    world: int = 1
    #: steps between checks of the time budget (each one a collective across ranks)
    check_every: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process validates, checkpoints and exports."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world

    def wrap(self, step: TrainStep) -> paddle.nn.Layer:
        """The layer whose call computes the losses and, on backward, the gradients
        that every rank applies."""
        return step

    def agree(self, *values: float) -> tuple[float, ...]:
        """Rank 0's ``values`` (as the same types), on every rank."""
        return values

    def total(self, *values: float) -> tuple[float, ...]:
        """``values`` summed over the ranks."""
        return values

    def epoch_done(self, model: FusionModel, epoch: int, train_mse: float) -> None:
        """Called on every rank after an epoch's last step, before validation."""


class TrainStep(paddle.nn.Layer):
    """One batch's losses, ``(mse, loss)``: squared error in stars plus, when the epoch's
    schedule gives the batch a user chunk, ``rank_weight`` times this rank's share of the
    ranking loss. A layer so that Paddle's ``DataParallel`` can wrap it whole."""

    def __init__(self, model: FusionModel, ranker: Ranker | None, cfg: FusionConfig,
                 shard: tuple[int, int] = (0, 1)) -> None:
        super().__init__()
        self.model = model
        self.ranker = ranker
        self.rank_weight = cfg.rank_weight
        self.shard = shard
        self.catalog = catalog_inputs(ranker.tables) if ranker is not None else []

    def forward(self, batch: Batch, chunk: np.ndarray | None = None):
        mse = mse_loss(self.model, batch)
        if chunk is None:
            return mse, mse
        return mse, mse + self.rank_weight * self.ranker.loss(self.model, chunk, self.catalog,
                                                              self.shard)


def gradient_bytes(model: FusionModel) -> int:
    """Bytes of the trainable parameters' gradients: what one step all-reduces across
    ranks (every gradient is dense, embeddings' included: no ``sparse=True`` layer)."""
    return int(sum(p.size * p.element_size() for p in model.parameters() if not p.stop_gradient))


@paddle.no_grad()
def predict(model: FusionModel, batcher: Batcher, batch_size: int = 8192) -> np.ndarray:
    """Raw (unclipped) predicted stars for every row of ``batcher``."""
    model.eval()
    out = [model(*b.inputs()).numpy() for b in batcher.ordered(batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _optimizer(cfg: FusionConfig, model: FusionModel) -> paddle.optimizer.Optimizer:
    if cfg.weight_decay > 0:
        return paddle.optimizer.AdamW(cfg.lr, parameters=model.parameters(),
                                      weight_decay=cfg.weight_decay)
    return paddle.optimizer.Adam(cfg.lr, parameters=model.parameters())


def mse_loss(model: FusionModel, batch: Batch) -> paddle.Tensor:
    """Mean squared error in stars of a rating batch."""
    return paddle.mean((model(*batch.inputs()) - paddle.to_tensor(batch.rating)) ** 2)


def _run_epoch(step: paddle.nn.Layer, opt, batcher: Batcher, ranker: Ranker | None,
               cfg: FusionConfig, rng: np.random.Generator, deadline: float, desc: str,
               progress: bool, par: Parallel) -> tuple[float, bool, int]:
    """One pass over (this rank's part of) the data; returns (mean squared error over all
    ranks, whether the time ran out on rank 0, the rows trained on over all ranks)."""
    step.train()
    total, count, out_of_time = 0.0, 0, False
    steps = batcher.steps(cfg.batch_size, par.world)
    schedule = ranker.schedule(steps, rng) if ranker is not None else {}
    with tqdm(batcher.epoch(cfg.batch_size, rng, cfg.user_id_dropout, cfg.movie_id_dropout,
                            par.shard),
              total=steps, desc=desc, disable=not progress, leave=False) as bar:
        for number, batch in enumerate(bar):
            mse, loss = step(batch, schedule.get(number))
            loss.backward()
            opt.step()
            opt.clear_grad()
            total += float(mse) * len(batch.rating)
            count += len(batch.rating)
            bar.set_postfix(mse=f"{total / count:.4f}", refresh=False)
            if (number + 1) % par.check_every == 0:
                (out_of_time,) = par.agree(time.monotonic() > deadline)
                if out_of_time:
                    break
    total, count = par.total(total, count)
    return total / max(count, 1), out_of_time, int(count)


def _param_names(model: FusionModel) -> dict[str, str]:
    """Structured name -> Paddle's unique tensor name (which differs between processes)."""
    return {key: param.name for key, param in model.named_parameters()}


def _renamed(opt_state: dict, old: dict[str, str], new: dict[str, str]) -> dict:
    """Optimizer state keyed by the current model's tensor names instead of the saved ones."""
    prefixes = {old[key] + "_": new[key] + "_" for key in new}
    out = {}
    for key, value in opt_state.items():
        match = next((p for p in prefixes if isinstance(key, str) and key.startswith(p)), None)
        out[prefixes[match] + key[len(match):] if match else key] = value
    return out


def _save_last(ckpt: Path, model, opt, state: dict) -> None:
    paddle.save(model.state_dict(), str(ckpt / "last.pdparams"))
    paddle.save(opt.state_dict(), str(ckpt / "last.pdopt"))
    (ckpt / "last.json").write_text(json.dumps({**state, "param_names": _param_names(model)}))


def _resume(ckpt: Path, model, opt, rng: np.random.Generator) -> dict | None:
    if not (ckpt / "last.json").is_file():
        return None
    state = json.loads((ckpt / "last.json").read_text())
    model.set_state_dict(paddle.load(str(ckpt / "last.pdparams")))
    opt.set_state_dict(_renamed(paddle.load(str(ckpt / "last.pdopt")), state["param_names"],
                                _param_names(model)))
    rng.bit_generator.state = state["rng"]
    opt.set_lr(state["lr"])
    return state


def train_model(data: MovieLens, train: pd.DataFrame, cfg: FusionConfig, seed: int,
                checkpoint_dir: Path, *, progress: bool = True, resume: bool = False,
                parallel: Parallel | None = None) -> TrainResult:
    """Fit on ``train`` minus a holdout slice; return the best-on-validation model (on a
    rank other than 0 of ``parallel``: the last one, unvalidated)."""
    started = time.monotonic()
    par = parallel or Parallel()
    seed_everything(seed)
    fit, valid = holdout(train, cfg.valid_fraction, seed)
    vocab = build_vocab(fit, data.movies, data.genres, cfg.title_len)
    tables = build_tables(vocab, data, cfg.window)
    fit_b, valid_b = batcher_for(tables, fit), batcher_for(tables, valid)
    ranker = Ranker.build(tables, fit, valid, cfg.rank_min_rating, cfg.rank_batch) \
        if cfg.rank_weight > 0 else None
    model = build_model(cfg, vocab, float(fit["rating"].mean()))
    if ranker is not None:
        model.init_item_bias(cell_likes(tables, rank_targets(tables, train, cfg.rank_min_rating)))
    opt = _optimizer(cfg, model)
    rng = np.random.default_rng(seed)
    if par.is_main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    state = (_resume(checkpoint_dir, model, opt, rng) if resume else None) or {
        "epoch": 0, "best_epoch": 0, "best": float("inf"), "history": []}
    if par.agree(state["epoch"]) != (state["epoch"],):
        raise RuntimeError(f"rank {par.rank} resumes from epoch {state['epoch']}, rank 0 "
                           f"does not: every rank must see the checkpoint {checkpoint_dir}")
    if par.rank:
        paddle.seed(seed + par.rank)   # its own dropout masks; the weights are rank 0's
    step = par.wrap(TrainStep(model, ranker, cfg, par.shard))
    deadline = started + cfg.max_minutes * 60
    for epoch in range(state["epoch"] + 1, cfg.max_epochs + 1):
        epoch_started = time.monotonic()
        loss, out_of_time, rows = _run_epoch(step, opt, fit_b, ranker, cfg, rng, deadline,
                                             f"epoch {epoch}/{cfg.max_epochs}",
                                             progress and par.is_main, par)
        epoch_seconds = time.monotonic() - epoch_started
        par.epoch_done(model, epoch, loss)
        improved = stop = False
        if par.is_main:
            valid_rmse = scores(predict(model, valid_b), valid_b.ratings)["rmse"]
            row = {"epoch": epoch, "train_mse": round(loss, 5),
                   "valid_rmse": round(valid_rmse, 5)}
            if ranker is not None:
                row["valid_rank_loss"] = round(ranker.valid_loss(model), 5)
            state["history"].append({**row, "seconds": round(time.monotonic() - started, 1),
                                     "epoch_seconds": round(epoch_seconds, 1),
                                     "rows": rows})
            if progress:
                tqdm.write(f"epoch {epoch}: " + "  ".join(f"{k} {v}" for k, v in row.items()
                                                          if k != "epoch"), file=sys.stderr)
            improved = valid_rmse < state["best"]
            if improved:
                state.update(best=valid_rmse, best_epoch=epoch)
                paddle.save(model.state_dict(), str(checkpoint_dir / "best.pdparams"))
            stop = out_of_time or epoch - state["best_epoch"] >= cfg.patience
        improved, stop = par.agree(improved, stop)
        if not improved:
            opt.set_lr(opt.get_lr() * cfg.lr_decay)
        state.update(epoch=epoch, rng=rng.bit_generator.state, lr=opt.get_lr())
        if par.is_main:
            _save_last(checkpoint_dir, model, opt, state)
        if stop:
            break
    if par.is_main:
        model.set_state_dict(paddle.load(str(checkpoint_dir / "best.pdparams")))
    model.eval()
    return TrainResult(model, cfg, vocab, tables, state["history"], state["best_epoch"],
                       state["best"], time.monotonic() - started)


def split_metrics(result: TrainResult, frame: pd.DataFrame,
                  split: str) -> dict[str, dict[str, float]]:
    """RMSE/MAE in stars on ``frame`` (the test part of ``split``), with user ids known and
    hidden (:func:`~movierec.models.fusion.evaluate.hidden_ids_key` names the latter)."""
    known = batcher_for(result.tables, frame)
    hidden = batcher_for(replace(result.tables, users=result.tables.users.hide_ids()), frame)
    return {"test": scores(predict(result.model, known), known.ratings),
            "test_" + hidden_ids_key(split): scores(predict(result.model, hidden),
                                                    hidden.ratings)}
