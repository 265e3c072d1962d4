"""PinSage trained data-parallel: one rank of ``movierec train pinsage --nproc N``.

Run under ``torchrun`` (``movierec train pinsage --nproc N`` starts it through
:mod:`movierec.models.launch`; a multi-node job runs ``torchrun ... -m
movierec.models.pinsage.ddp <the flags of movierec train pinsage>`` on every node)::

    python -m torch.distributed.run --nproc-per-node=2 --standalone \\
        -m movierec.models.pinsage.ddp --dataset ml-1m --max-epochs 1

Every rank joins a gloo process group (CPU) from the environment torchrun sets, loads
the data and builds the whole graph and the same initial weights, then
:func:`movierec.models.pinsage.train.train` runs with :class:`Gloo` as its hooks:

* the loss module is wrapped in ``DistributedDataParallel``, which all-reduces (averages)
  every gradient each step: ``allreduce_bytes_per_step`` in the artifact's
  ``training.distributed`` is the size of all trainable parameters, all dense;
* every rank draws its own walks and history splits (seed + rank) and takes every
  ``world``-th batch of a batch order they share, padded so each rank runs the same
  number of steps (a rank short of a batch repeats one from the epoch's start);
* one step's batch is ``world`` x ``--batch-users`` users (the flag is per rank), so an
  epoch has ``world`` times fewer steps. ``--lr-scaling sqrt`` (default) multiplies the
  learning rate by sqrt(world) (Adam's square-root rule for a larger batch) and raises
  the weight average's decay to the power ``world`` (it still spans as many users);
  ``linear`` multiplies the rate by ``world``, ``none`` keeps both as given;
* rank 0 alone validates, keeps the best epoch, checkpoints, calibrates, tests and
  exports; its stop decision (patience, time budget) is broadcast after every epoch so
  every rank leaves the loop together; at the end the ranks compare a digest of their
  weights and fail if they ever diverged.

Test hooks (read here only): ``MOVIEREC_DDP_FAIL_RANK=r`` makes rank ``r`` fail at its
first epoch; ``MOVIEREC_DDP_DUMP=dir`` makes every rank write ``pid-<rank>`` there at
start and ``rank-<rank>.pt`` (its last weights, epoch losses and steps) at the end.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from movierec.models.pinsage.train import SingleProcess, TrainConfig

#: how a rank count changes the learning rate (and the weight average's decay)
LR_SCALING = ("sqrt", "linear", "none")
FAIL_RANK_ENV = "MOVIEREC_DDP_FAIL_RANK"
DUMP_ENV = "MOVIEREC_DDP_DUMP"


def scaled(config: TrainConfig, world: int, rule: str = "sqrt") -> TrainConfig:
    """``config`` for ``world`` ranks each taking its batch: see the module doc."""
    if rule not in LR_SCALING:
        raise ValueError(f"unknown --lr-scaling {rule!r}; known: {LR_SCALING}")
    if world == 1 or rule == "none":
        return config
    factor = math.sqrt(world) if rule == "sqrt" else float(world)
    return replace(config, lr=config.lr * factor, ema=config.ema ** world)


def shard(batches: list, rank: int, world: int) -> list:
    """Batches ``rank``, ``rank + world``, ... of ``batches`` cycled to a multiple of
    ``world``: every rank gets ``ceil(len / world)`` of them."""
    if not batches:
        return []
    count = math.ceil(len(batches) / world) * world
    return [batches[i % len(batches)] for i in range(rank, count, world)]


def digest(model: nn.Module) -> int:
    """A 63-bit digest of every parameter's bytes."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return int.from_bytes(hashlib.sha256(flat.numpy().tobytes()).digest()[:8], "big") >> 1


class Gloo(SingleProcess):
    """The data-parallel hooks of :func:`~movierec.models.pinsage.train.train`: a gloo
    process group joined from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``)."""

    backend = "gloo"

    def __init__(self) -> None:
        if "WORLD_SIZE" not in os.environ:
            raise SystemExit("movierec.models.pinsage.ddp runs under torchrun "
                             "(movierec train pinsage --nproc N starts it)")
        tdist.init_process_group("gloo")
        self.rank, self.world = tdist.get_rank(), tdist.get_world_size()
        self.losses: list[float] = []
        self.steps = 0
        self._fail = os.environ.get(FAIL_RANK_ENV) == str(self.rank)
        self._dump = Path(os.environ[DUMP_ENV]) if os.environ.get(DUMP_ENV) else None
        if self._dump is not None:
            self._dump.mkdir(parents=True, exist_ok=True)
            (self._dump / f"pid-{self.rank}").write_text(str(os.getpid()))

    def wrap(self, module: nn.Module) -> nn.Module:
        # An objective that leaves parameters out (margin: no user tower or item tables)
        # has DDP look for them each step; the softmax uses every one. The buffers are the
        # fixed movie features, the same on every rank: not synced before each step.
        every = getattr(module, "uses_every_parameter", False)
        return DistributedDataParallel(module, find_unused_parameters=not every,
                                       forward_sync_buffers=False)

    def shard(self, batches: list) -> list:
        if self._fail:
            raise RuntimeError(f"rank {self.rank} fails on purpose ({FAIL_RANK_ENV})")
        mine = shard(batches, self.rank, self.world)
        self.steps += len(mine)
        return mine

    def mean(self, value: float) -> float:
        self.losses.append(value)
        total = torch.tensor([value], dtype=torch.float64)
        tdist.all_reduce(total)
        return float(total.item()) / self.world

    def agree(self, stop: bool) -> bool:
        flag = torch.tensor([int(stop)], dtype=torch.int64)
        tdist.broadcast(flag, src=0)
        return bool(flag.item())

    def finished(self, model: nn.Module) -> None:
        if self._dump is not None:
            flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            torch.save({"rank": self.rank, "world": self.world, "params": flat,
                        "losses": self.losses, "steps": self.steps},
                       self._dump / f"rank-{self.rank}.pt")
        mine = torch.tensor([digest(model)], dtype=torch.int64)
        every = [torch.zeros_like(mine) for _ in range(self.world)]
        tdist.all_gather(every, mine)
        if len({int(t.item()) for t in every}) != 1:
            raise RuntimeError(f"the ranks' weights diverged: digests {[int(t) for t in every]}")

    def close(self) -> None:
        if tdist.is_initialized():
            tdist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    from movierec.models.pinsage import commands

    args = commands.train_parser("python -m movierec.models.pinsage.ddp").parse_args(
        sys.argv[1:] if argv is None else list(argv))
    dist = Gloo()
    try:
        return commands.train(args, dist)
    finally:
        dist.close()


if __name__ == "__main__":
    sys.exit(main())
