"""PinSage training loop: objectives, early stopping on validation, checkpoints.

Every step embeds the whole catalog through the two convolutions (neighbourhoods
resampled once per epoch) and computes one of two objectives:

* ``softmax`` (default, user-aware): for a batch of users, each user's training
  history is split at random into inputs and targets (``target_frac``); the user
  vector is the aggregation (:mod:`.aggregation`) of the input items' vectors, exactly
  as at serving time; the loss is the cross-entropy of the targets under a softmax
  over all movies (cosine / ``temperature``), input items masked, averaged over the
  batch's targets (``per_target``, so a long history weighs more, as in EASE's loss)
  or over its users.
* ``margin`` (the DGL example's): item -> user -> item walk co-occurrences are
  positives, uniformly drawn movies negatives, ``relu(s_neg - s_pos + margin)``.

After each epoch the model is scored on the validation task with full ranking
(Recall@10, same aggregation as serving); the best epoch is checkpointed and
restored; training stops after ``patience`` epochs without improvement or when the
time budget is spent.

The same loop trains data-parallel (:mod:`.ddp`, one process per rank): ``train`` and
:class:`Trainer` take a :class:`SingleProcess` (the default, whose hooks do nothing)
or its distributed counterpart, which wraps the loss in DistributedDataParallel, gives
each rank its share of every epoch's batches, averages the epoch loss and tells every
rank rank 0's stop decision; rank 0 alone validates and checkpoints.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from movierec.compat.dgl import import_dgl
from movierec.evaluation.ranking import RankingTask, evaluate
from movierec.models.pinsage.aggregation import UserTower, history_matrix, user_scorer
from movierec.models.pinsage.graph import TrainingGraph
from movierec.models.pinsage.model import ItemTables, PinSage
from movierec.models.pinsage.sampler import (
    HistorySplit,
    NeighbourSampler,
    WalkConfig,
    cooccurrence_pairs,
    split_histories,
)

OBJECTIVES = ("softmax", "margin")
#: parameter names of the free per-movie tables (see ``free_decay``)
FREE_PARAMETERS = ("free_in.", "free_out.", "free_bias", "input_scale")
#: the stream (beside the seed) of the batch order, which every rank shares
ORDER_STREAM = 1


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters (defaults are the ml-1m defaults documented in docs/pinsage.md)."""

    dim: int = 128
    layers: int = 2
    dropout: float = 0.0
    objective: str = "softmax"
    aggregation: str = "rating"
    temperature: float = 0.15
    split_roles: bool = False
    item_bias: bool = True
    user_layers: int = 0
    free_dim: int = 512
    free_shared: bool = True
    free_decay: float = 1.0
    free_bias: bool = False
    per_target: bool = True
    input_scale: bool = True
    target_power: float = 0.5
    pool: str = "l2"
    cosine: bool = True
    target_frac: float = 0.5
    short_frac: float = 0.0
    short_len: int = 5
    margin: float = 0.3
    batch_users: int = 128
    batch_items: int = 1024
    lr: float = 3e-3
    ema: float = 0.99
    weight_decay: float = 0.0
    max_epochs: int = 200
    patience: int = 10
    time_budget_s: float = 18 * 60
    walks: WalkConfig = field(default_factory=WalkConfig)
    export_walks: int = 200
    seed: int = 2026

    @property
    def shared_tower(self) -> bool:
        """The original design: a user vector is the normalized mean of the unit item
        vectors themselves (no separate input vectors, bias, layers, free columns)."""
        return not (self.split_roles or self.item_bias or self.user_layers or self.free_dim
                    or self.input_scale)


@dataclass
class TrainResult:
    """The trained model (best epoch), the export neighbourhoods and the training log."""

    model: PinSage
    export_graphs: list
    best_epoch: int
    best_valid: dict[str, float]
    seconds: float
    log: list[dict] = field(default_factory=list)
    #: world size, batch per rank and per step, steps per epoch, bytes all-reduced per step
    distributed: dict = field(default_factory=dict)


class SingleProcess:
    """The distributed hooks of :func:`train` for one process: every one a no-op.

    :class:`movierec.models.pinsage.ddp.Gloo` is the data-parallel counterpart.
    """

    rank, world, backend = 0, 1, "none"

    @property
    def is_main(self) -> bool:
        """Whether this process validates, checkpoints and exports (rank 0)."""
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        """The module the steps call (DistributedDataParallel around it, distributed)."""
        return module

    def shard(self, batches: list) -> list:
        """This rank's share of an epoch's batches (every rank the same number)."""
        return batches

    def mean(self, value: float) -> float:
        """``value`` averaged over the ranks."""
        return value

    def agree(self, stop: bool) -> bool:
        """Rank 0's ``stop``, on every rank (so they all leave the loop together)."""
        return stop

    def finished(self, model: nn.Module) -> None:
        """Called with the last step's weights before the best epoch's are restored."""


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    import_dgl().seed(seed)


def build_model(data: TrainingGraph, config: TrainConfig) -> PinSage:
    """The network ``config`` describes, for ``data``'s movies."""
    return PinSage(data.features, len(data.vocab), config.dim, config.layers, config.dropout,
                   split_roles=config.split_roles, item_bias=config.item_bias,
                   user_layers=config.user_layers, pool=config.pool, cosine=config.cosine,
                   free_dim=config.free_dim, free_shared=config.free_shared,
                   free_bias=config.free_bias, input_scale=config.input_scale)


@dataclass(frozen=True)
class Served:
    """What serving needs: the item vectors (Milvus) and the numpy user tower."""

    item_vectors: np.ndarray  # (N, d[+1]) float32
    tower: UserTower


def served_arrays(model: PinSage, graphs: list) -> Served:
    """Item vectors and user tower of every movie (eval mode, no gradient)."""
    model.eval()
    with torch.no_grad():
        tables = model.tables(model(graphs))
        vectors = tables.exported().numpy()
        tower = UserTower(tables.inputs.numpy(), model.user_tower.pool,
                          model.user_tower.arrays(), tables.bias is not None,
                          model.user_tower.unit)
    model.train()
    return Served(vectors, tower)


def item_vectors(model: PinSage, graphs: list) -> np.ndarray:
    """The exported item vectors of every movie (see :func:`served_arrays`)."""
    return served_arrays(model, graphs).item_vectors


def validate(model: PinSage, graphs: list, task: RankingTask, aggregation: str) -> dict:
    served = served_arrays(model, graphs)
    return evaluate(user_scorer(served.tower, served.item_vectors, task.history, aggregation),
                    task)


def softmax_loss(model: PinSage, tables: ItemTables, batch, temperature: float,
                 per_target: bool = False) -> torch.Tensor:
    """Cross-entropy of the targets; each user weighs 1, or (``per_target``) each target."""
    users = model.user_tower(batch.inputs, tables.inputs)
    logits = (tables.scores(users) / temperature).masked_fill(batch.seen, float("-inf"))
    log_prob = torch.log_softmax(logits, dim=1).masked_fill(batch.seen, 0.0)
    if per_target:
        return -(batch.targets * log_prob).sum() / batch.targets.sum()
    return (-(batch.targets * log_prob).sum(1) / batch.targets.sum(1)).mean()


def margin_loss(vectors: torch.Tensor, heads: torch.Tensor, tails: torch.Tensor,
                margin: float) -> torch.Tensor:
    negatives = torch.randint(0, len(vectors), (len(heads),))
    pos = (vectors[heads] * vectors[tails]).sum(1)
    neg = (vectors[heads] * vectors[negatives]).sum(1)
    return F.relu(neg - pos + margin).mean()


class Objective(nn.Module):
    """A batch's training loss as one module call. DistributedDataParallel wraps this,
    not the network, so everything from the weights to the loss is inside its forward
    (the user tower and item tables included) and its unused-parameter search sees it."""

    def __init__(self, model: PinSage, config: TrainConfig) -> None:
        super().__init__()
        self.model, self.config = model, config

    @property
    def uses_every_parameter(self) -> bool:
        """Whether every step's loss reaches every parameter (the margin objective
        leaves the user tower and item tables out)."""
        return self.config.objective == "softmax"

    def forward(self, graphs: list, batch) -> torch.Tensor:
        """``batch``: a :class:`UserBatch` (softmax) or ``(heads, tails)`` (margin)."""
        vectors = self.model(graphs)
        if self.config.objective == "softmax":
            return softmax_loss(self.model, self.model.tables(vectors), batch,
                                self.config.temperature, self.config.per_target)
        heads, tails = batch
        return margin_loss(vectors, heads, tails, self.config.margin)


def _param_groups(model: PinSage, config: TrainConfig) -> list[dict]:
    """The free per-movie parameters decay by ``free_decay`` (decoupled, AdamW), the rest
    by ``weight_decay``."""
    named = list(model.named_parameters())
    free = [p for name, p in named if name.startswith(FREE_PARAMETERS)]
    rest = [p for name, p in named if not name.startswith(FREE_PARAMETERS)]
    return [{"params": rest, "weight_decay": config.weight_decay},
            {"params": free, "weight_decay": config.free_decay}]


class Trainer:
    """Runs epochs of one objective over a :class:`TrainingGraph`.

    Distributed, every rank builds the same initial weights (``config.seed``), then
    rank ``r`` samples its own walks and history splits (seed ``config.seed + r``; rank
    0 goes on as a single process would) and takes every ``world``-th batch of a batch
    order all ranks share.
    """

    def __init__(self, data: TrainingGraph, config: TrainConfig,
                 dist: SingleProcess | None = None) -> None:
        if config.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {config.objective!r}; known: {OBJECTIVES}")
        self.dist = dist = dist or SingleProcess()
        seed_everything(config.seed)
        self.data, self.config = data, config
        self.model = build_model(data, config)
        if dist.rank:
            seed_everything(config.seed + dist.rank)
        self.objective = dist.wrap(Objective(self.model, config))
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, config), lr=config.lr)
        self.average = copy.deepcopy(self.model) if config.ema > 0 else None
        self.sampler = NeighbourSampler(data.graph, config.walks)
        self.rng = np.random.default_rng(config.seed + dist.rank)
        self.order = (self.rng if dist.world == 1 else
                      np.random.default_rng([config.seed, ORDER_STREAM]))
        self.weights = history_matrix(data.history, config.aggregation)
        self.users = np.flatnonzero(np.diff(self.weights.indptr) >= 2)
        self.split = HistorySplit(config.target_frac, config.short_frac, config.short_len,
                                  config.target_power)
        self.items = torch.from_numpy(np.flatnonzero(data.features.has_edges))
        export = replace(config.walks, num_random_walks=config.export_walks)
        self.export_graphs = NeighbourSampler(data.graph, export).layers(config.layers)

    def epoch(self) -> float:
        """One pass over users (softmax) or items (margin); returns the mean loss."""
        graphs = self.sampler.layers(self.config.layers)
        losses = [self._step(graphs, batch) for batch in self._batches()]
        return self.dist.mean(float(np.mean(losses)))

    def _pool(self) -> tuple[np.ndarray, int]:
        """What an epoch goes over (users or movies) and how many make a batch (per rank)."""
        if self.config.objective == "softmax":
            return self.users, self.config.batch_users
        return self.items.numpy(), self.config.batch_items

    def _batches(self) -> list[np.ndarray]:
        pool, size = self._pool()
        order = self.order.permutation(pool)
        return self.dist.shard([order[i:i + size] for i in range(0, len(order), size)])

    def communication(self) -> dict:
        """World size, batch sizes, steps per epoch (per rank) and the bytes DDP
        all-reduces per step: every trainable parameter's gradient, dense."""
        pool, size = self._pool()
        world = self.dist.world
        grads = sum(p.numel() * p.element_size() for p in self.model.parameters()
                    if p.requires_grad)
        return {"world_size": world, "backend": self.dist.backend,
                "batch_unit": "users" if self.config.objective == "softmax" else "movies",
                "batch_per_rank": size, "batch_per_step": size * world,
                "steps_per_epoch": math.ceil(math.ceil(len(pool) / size) / world),
                "allreduce_bytes_per_step": grads if world > 1 else 0,
                "gradient_bytes": grads}

    def _step(self, graphs: list, batch: np.ndarray) -> float:
        if self.config.objective == "softmax":
            inputs = split_histories(self.weights[batch], self.split, self.rng,
                                     self.data.stamps[batch])
        else:
            inputs = cooccurrence_pairs(self.data.graph, torch.from_numpy(batch))
        loss = self.objective(graphs, inputs)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.average is not None:
            with torch.no_grad():
                for mean, value in zip(self.average.parameters(), self.model.parameters(),
                                       strict=True):
                    mean.lerp_(value, 1.0 - self.config.ema)
        return float(loss.detach())

    @property
    def evaluated(self) -> PinSage:
        """The model validated and exported: the weights' moving average, if kept."""
        return self.average if self.average is not None else self.model


def train(data: TrainingGraph, valid: RankingTask, config: TrainConfig,
          checkpoint_dir: Path | None = None, progress: bool = True,
          dist: SingleProcess | None = None) -> TrainResult:
    """Train with early stopping on ``valid``; the returned model is the best epoch's.

    Distributed (``dist``), rank 0 alone validates and checkpoints and its stop decision
    holds for every rank; the other ranks return their last weights and no metrics.
    """
    dist = dist or SingleProcess()
    trainer = Trainer(data, config, dist)
    if dist.world > 1 and dist.is_main:
        c = trainer.communication()
        print(f"pinsage: {c['world_size']} ranks ({c['backend']}), {c['batch_per_rank']} "
              f"{c['batch_unit']} per rank and step ({c['batch_per_step']} per step), "
              f"{c['steps_per_epoch']} steps per epoch, {c['allreduce_bytes_per_step']} bytes "
              f"all-reduced per step", flush=True)
    started = time.perf_counter()
    best: dict = {"recall@10": -1.0}
    best_state, best_epoch, stale, log = None, 0, 0, []
    bar = tqdm(range(1, config.max_epochs + 1), desc="pinsage",
               disable=not progress or not dist.is_main)
    for epoch in bar:
        tick = time.perf_counter()
        loss = trainer.epoch()
        trained = time.perf_counter() - tick
        metrics = (validate(trainer.evaluated, trainer.export_graphs, valid, config.aggregation)
                   if dist.is_main else {})
        elapsed = time.perf_counter() - started
        log.append({"epoch": epoch, "loss": round(loss, 5), "seconds": round(elapsed, 1),
                    "train_seconds": round(trained, 2),
                    **{k: round(v, 5) for k, v in metrics.items() if "@10" in k}})
        if dist.is_main:
            bar.set_postfix(loss=f"{loss:.4f}", recall10=f"{metrics['recall@10']:.4f}")
            if metrics["recall@10"] > best["recall@10"]:
                best, best_epoch, stale = metrics, epoch, 0
                best_state = copy.deepcopy(trainer.evaluated.state_dict())
                _checkpoint(checkpoint_dir, best_state, config, epoch, metrics)
            else:
                stale += 1
        if dist.agree(stale >= config.patience or elapsed >= config.time_budget_s):
            break
    dist.finished(trainer.model)
    if dist.is_main:
        trainer.model.load_state_dict(best_state)
    return TrainResult(trainer.model, trainer.export_graphs, best_epoch, best,
                       time.perf_counter() - started, log, trainer.communication())


def _checkpoint(directory: Path | None, state: dict, config: TrainConfig, epoch: int,
                metrics: dict) -> None:
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"state": state, "config": asdict(config), "epoch": epoch, "valid": metrics}
    torch.save(payload, directory / "best.pt")
