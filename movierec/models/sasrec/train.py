"""Train SASRec with full cross-entropy over the catalog ("SASRec+", Klenitskiy &
Vasilev, RecSys 2023): at every position of every training sequence the next item is
the target and every item of the catalog competes in the softmax. AdamW with a short
warm-up and a cosine decay over ``max_epochs``; early stopping on the validation task's
NDCG@10 (checked every ``eval_every`` epochs), within a time budget; the best weights
are kept.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from movierec.evaluation.ranking import RankingTask, Scorer
from movierec.evaluation.ranking import evaluate as rank_evaluate
from movierec.models.sasrec.data import (
    ItemIndex,
    gap_buckets,
    left_padded,
    shuffle_ties,
    timed_sequences,
)
from movierec.models.sasrec.loss import full_cross_entropy
from movierec.models.sasrec.model import Dims, SasRec


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters (defaults: the documented ml-1m configuration, docs/sequence.md)."""

    dim: int = 128
    layers: int = 2
    heads: int = 1
    max_len: int = 200
    ffn: int = 1
    dropout: float = 0.2
    positions: str = "newest"  # or "oldest" (model.Dims.positions)
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch: int = 64
    max_epochs: int = 50       # the cosine schedule reaches 0 here
    schedule: str = "cosine"   # or "constant"
    warmup_steps: int = 100
    crop: float = 0.0          # share of long histories trained on an older window
    shuffle_ties: bool = False  # True: a random order inside each second, each epoch
    horizon: int = 1           # a target up to this many steps ahead (1: the next item)
    patience: int = 5          # evaluations without a better validation NDCG@10
    eval_every: int = 3
    time_budget_s: float = 28 * 60
    seed: int = 2026
    fixed_epochs: int = 0      # > 0: exactly this many epochs, no validation (a refit)
    gaps: bool = True          # the time since the rating before as an input (data.gap_buckets)

    def dims(self, items: int) -> Dims:
        return Dims(items, self.dim, self.layers, self.heads, self.max_len, self.ffn,
                    self.dropout, self.positions, self.gaps)


@dataclass
class TrainResult:
    model: SasRec
    index: ItemIndex
    best_epoch: int
    best_valid: dict[str, float]
    seconds: float
    log: list[dict] = field(default_factory=list)


def _window(size: int, length: int, crop: float, rng: np.random.Generator) -> slice:
    """The newest ``length + 1`` of a sequence of ``size`` items; with probability
    ``crop`` (a history longer than that) an older window chosen uniformly instead (more
    of long histories is trained on over the epochs)."""
    if size <= length + 1 or rng.random() >= crop:
        return slice(max(size - length - 1, 0), size)
    end = int(rng.integers(length + 1, size + 1))
    return slice(end - length - 1, end)


def _batches(seqs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], config: TrainConfig,
             rng: np.random.Generator):
    """(inputs, targets, gaps) per batch: inputs are window[:-1], targets window[1:] of
    each user's (items, times, gap rows) sequence, same-second ties shuffled
    (``shuffle_ties``; the gap rows are the same in any order inside a second), gaps the
    inputs' gap rows (None unless ``config.gaps``). Users of similar length share a
    batch (sorted by length with a random tie-break, the batches then shuffled), and a
    batch is padded only to its longest window: no compute on padding a shorter batch
    does not need."""
    windows, gap_windows = [], []
    for items, times, gaps in seqs:
        seq = shuffle_ties(items, times, rng) if config.shuffle_ties else items
        cut = _window(len(seq), config.max_len + config.horizon - 1, config.crop, rng)
        windows.append(seq[cut])
        gap_windows.append(gaps[cut][:-1][-config.max_len:])
    sizes = np.array([len(w) for w in windows])
    order = np.lexsort((rng.random(len(windows)), sizes))
    starts = np.arange(0, len(order), config.batch)
    for start in rng.permutation(starts):
        rows = order[start:start + config.batch]
        pairs = [_pairs(windows[i], config, rng) for i in rows]
        width = max(len(i) for i, _ in pairs)
        inputs = left_padded([i for i, _ in pairs], width)
        targets = left_padded([t for _, t in pairs], width)
        gaps = (torch.from_numpy(left_padded([gap_windows[i] for i in rows], width))
                if config.gaps else None)
        yield torch.from_numpy(inputs), torch.from_numpy(targets), gaps


def _pairs(window: np.ndarray, config: TrainConfig,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of one window: the target after position t is the item ``j``
    steps ahead, ``j`` drawn from 1..``horizon`` (1: the next item; larger: an item of
    the near future, as PinnerFormer's dense all-action loss trains for the long term)."""
    inputs = window[:-1][-config.max_len:]
    offset = len(window) - 1 - len(inputs)          # inputs start here in the window
    if config.horizon == 1:
        return inputs, window[offset + 1:]
    ahead = rng.integers(1, config.horizon + 1, len(inputs))
    return inputs, window[np.minimum(offset + np.arange(len(inputs)) + ahead, len(window) - 1)]


def schedule(optimizer: torch.optim.Optimizer, config: TrainConfig,
             steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then constant or a cosine decay that reaches
    0 after ``max_epochs`` epochs (per optimizer step)."""
    total = max(config.max_epochs * steps_per_epoch, config.warmup_steps + 1)

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        done = (step - config.warmup_steps) / (total - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _epoch(model: SasRec, seqs: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
           config: TrainConfig, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
           scheduler: torch.optim.lr_scheduler.LambdaLR) -> float:
    model.train()
    total, count = 0.0, 0
    for inputs, targets, gaps in _batches(seqs, config, rng):
        hidden = model(inputs, gaps)
        keep = targets > 0
        loss = full_cross_entropy(hidden[keep], model.item_table(), targets[keep] - 1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += float(loss.detach()) * int(keep.sum())
        count += int(keep.sum())
    return total / max(count, 1)


def last_hidden(model: SasRec, seqs: list[np.ndarray],
                times: list[np.ndarray | None] | None = None, batch: int = 256) -> np.ndarray:
    """The query vector (hidden state at the newest position) of each sequence; ``times``
    each sequence's rating times (None: no gap known, the row the network reads then)."""
    model.eval()
    out = np.zeros((len(seqs), model.dims.dim), np.float32)
    times = [None] * len(seqs) if times is None else times
    with torch.no_grad():
        for start in range(0, len(seqs), batch):
            chunk = left_padded(seqs[start:start + batch], model.dims.max_len)
            gaps = None
            if model.dims.gaps:         # a network without a gap table reads no times
                gaps = torch.from_numpy(left_padded(
                    [gap_buckets(t, len(s)) for s, t in zip(
                        seqs[start:start + batch], times[start:start + batch], strict=True)],
                    model.dims.max_len))
            out[start:start + batch] = model(torch.from_numpy(chunk), gaps)[:, -1].numpy()
    return out


def task_scorer(encode: Callable[[list[np.ndarray], list[np.ndarray]], np.ndarray],
                item_vectors: np.ndarray, index: ItemIndex, task: RankingTask,
                histories: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> Scorer:
    """Scores of ``task``'s users: their history frame in sequence order with its times
    (``histories`` when already built), encoded by ``encode(items, times)``, against
    ``item_vectors`` (rows: index 1..N) on the task's movie columns."""
    if histories is None:
        histories = timed_sequences(task.history_frame, index)
    columns = index.lookup(task.movie_ids)
    table = np.zeros((len(task.movie_ids), item_vectors.shape[1]), np.float32)
    table[columns > 0] = item_vectors[columns[columns > 0] - 1]
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))

    def score(rows: np.ndarray) -> np.ndarray:
        pairs = [histories.get(int(task.user_ids[r]), empty) for r in rows]
        out = encode([i for i, _ in pairs], [t for _, t in pairs]) @ table.T
        out[:, columns == 0] = -np.inf
        return out
    return score


def _validate(model: SasRec, index: ItemIndex, valid: RankingTask,
              histories: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    items = model.item_table().detach().numpy()
    return rank_evaluate(task_scorer(lambda s, t: last_hidden(model, s, t), items, index,
                                     valid, histories), valid)


def _start(train_seqs: dict[int, tuple[np.ndarray, np.ndarray]], index: ItemIndex,
           config: TrainConfig):
    """Seeded generator, the trainable sequences, a fresh model, its optimizer and
    schedule."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    seqs = [(items, times, gap_buckets(times)) for items, times in train_seqs.values()
            if len(items) >= 2]
    model = SasRec(config.dims(index.size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    return rng, seqs, model, optimizer, schedule(optimizer, config,
                                                 -(-len(seqs) // config.batch))


def train(train_seqs: dict[int, tuple[np.ndarray, np.ndarray]], index: ItemIndex,
          valid: RankingTask | None,
          config: TrainConfig, progress: bool = True,
          checkpoints: Path | None = None) -> TrainResult:
    """Train on ``train_seqs`` (users' (items, times), :func:`.data.timed_sequences`),
    early-stop on ``valid``; the best
    weights so far are also saved as ``checkpoints/best.pt`` when given. Without
    ``valid`` (``config.fixed_epochs``, a refit whose epoch count a validation run chose)
    every epoch runs and the last weights are kept."""
    if valid is None:
        return _train_fixed(train_seqs, index, config, progress)
    rng, seqs, model, optimizer, scheduler = _start(train_seqs, index, config)
    histories = timed_sequences(valid.history_frame, index)   # the validation users, once
    started, log = time.perf_counter(), []
    best: tuple[float, int, dict, dict] = (-1.0, 0, {}, {})
    waited = 0
    for epoch in range(1, config.max_epochs + 1):
        loss = _epoch(model, seqs, config, optimizer, rng, scheduler)
        entry = {"epoch": epoch, "loss": round(loss, 4),
                 "seconds": round(time.perf_counter() - started, 1)}
        over = time.perf_counter() - started > config.time_budget_s
        if over or epoch % config.eval_every == 0 or epoch == config.max_epochs:
            metrics = _validate(model, index, valid, histories)
            entry.update({k: round(metrics[k], 5) for k in ("recall@10", "ndcg@10")})
            if metrics["ndcg@10"] > best[0]:
                best = (metrics["ndcg@10"], epoch, metrics, copy.deepcopy(model.state_dict()))
                waited = 0
                if checkpoints is not None:
                    checkpoints.mkdir(parents=True, exist_ok=True)
                    torch.save({"epoch": epoch, "model": best[3]}, checkpoints / "best.pt")
            else:
                waited += 1
        log.append(entry)
        if progress:
            print(f"sasrec: {entry}", flush=True)
        if over or waited >= config.patience:
            break
    if best[3]:
        model.load_state_dict(best[3])
    model.eval()
    return TrainResult(model, index, best[1], best[2], time.perf_counter() - started, log)


def _train_fixed(train_seqs: dict[int, tuple[np.ndarray, np.ndarray]], index: ItemIndex,
                 config: TrainConfig, progress: bool) -> TrainResult:
    """``config.fixed_epochs`` epochs (the schedule still spans ``max_epochs``), no
    validation; the last weights."""
    if not 0 < config.fixed_epochs <= config.max_epochs:
        raise ValueError("a run without validation needs 0 < fixed_epochs <= max_epochs")
    rng, seqs, model, optimizer, scheduler = _start(train_seqs, index, config)
    started, log = time.perf_counter(), []
    for epoch in range(1, config.fixed_epochs + 1):
        loss = _epoch(model, seqs, config, optimizer, rng, scheduler)
        log.append({"epoch": epoch, "loss": round(loss, 4),
                    "seconds": round(time.perf_counter() - started, 1)})
        if progress:
            print(f"sasrec: {log[-1]}", flush=True)
    model.eval()
    return TrainResult(model, index, config.fixed_epochs, {}, time.perf_counter() - started,
                       log)
