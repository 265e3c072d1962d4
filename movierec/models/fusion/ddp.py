"""One rank of data-parallel fusion training (Paddle's collective mode, gloo on CPU).

``python -m movierec.models.fusion.ddp <movierec train fusion flags>`` under
``python -m paddle.distributed.launch --nproc_per_node N`` (what ``movierec train fusion
--nproc N`` runs, see :mod:`movierec.models.launch`). Each rank joins the process group
(:func:`paddle.distributed.init_parallel_env`) and runs the one training loop of
:mod:`.train` as a :class:`Collective`:

* every rank builds the model from the same seed and ``paddle.DataParallel`` broadcasts
  rank 0's weights, so all start identical;
* every rank cuts the same shuffled batches of ``--batch-size`` rows (the global batch)
  and trains on its own ``1/N`` of each, and of each ranking-loss user chunk, so every
  rank takes the same number of steps;
* ``DataParallel`` all-reduces (averages) the gradients during ``backward``; every
  trainable parameter's gradient is dense (no embedding is ``sparse=True``), so a step
  sends :func:`~.train.gradient_bytes` (logged at start);
* rank 0 alone validates, checkpoints and exports; its learning-rate, stop and
  out-of-time decisions are broadcast (the time budget is checked every ``check_every``
  steps, each check being one more collective), so the ranks apply the same updates
  and stop together.

Without the launcher's environment (one process) this is ``movierec train fusion``.

Test hooks, read here only: ``MOVIEREC_DDP_FAIL_RANK=r`` makes rank ``r`` fail in its
third step (the others then wait in that step's all-reduce); ``MOVIEREC_DDP_TEST_DIR=d``
makes every rank write ``d/rank-<r>-epoch-<e>.json`` (a hash of its parameters, the
epoch's training MSE) and ``.npz`` (the parameters) after each epoch's last step, and
``d/pid-<r>`` at start.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from movierec.compat.paddle import paddle
from movierec.models.fusion.model import FusionModel
from movierec.models.fusion.train import Parallel, TrainStep, gradient_bytes, use_cpu

FAIL_RANK = "MOVIEREC_DDP_FAIL_RANK"
TEST_DIR = "MOVIEREC_DDP_TEST_DIR"


def parameter_hash(model: FusionModel) -> str:
    """SHA-256 of every parameter's name and bytes, in the model's order."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(param.numpy()).tobytes())
    return digest.hexdigest()


class Collective(Parallel):
    """Rank ``rank`` of ``world`` in the default process group (gloo on CPU builds)."""

    check_every = 16

    def __init__(self) -> None:
        paddle.distributed.init_parallel_env()
        self.rank = paddle.distributed.get_rank()
        self.world = paddle.distributed.get_world_size()
        fail = os.environ.get(FAIL_RANK, "")
        self._fail = fail != "" and int(fail) == self.rank
        self._test_dir = Path(os.environ[TEST_DIR]) if os.environ.get(TEST_DIR) else None
        if self._test_dir is not None:
            self._test_dir.mkdir(parents=True, exist_ok=True)
            (self._test_dir / f"pid-{self.rank}").write_text(str(os.getpid()))

    def wrap(self, step: TrainStep) -> paddle.nn.Layer:
        if self.is_main:
            trainable = [p for p in step.model.parameters() if not p.stop_gradient]
            print(f"fusion ddp: {self.world} ranks, all-reduce of {len(trainable)} dense "
                  f"gradients, {gradient_bytes(step.model)} bytes per step", file=sys.stderr)
        if self._fail:
            steps = itertools.count(1)

            def fail(layer, inputs, outputs):
                if next(steps) == 3:
                    raise RuntimeError(f"rank {self.rank} fails on purpose ({FAIL_RANK})")
            step.register_forward_post_hook(fail)
        # the ranking loss runs on some steps only: its parameters (rank_scale) get no
        # gradient on the others, which the reducer must be told to expect
        return paddle.DataParallel(step, find_unused_parameters=True)

    def agree(self, *values: float) -> tuple[float, ...]:
        tensor = paddle.to_tensor(np.asarray(values, dtype=np.float64))
        paddle.distributed.broadcast(tensor, src=0)
        return tuple(type(v)(x) for v, x in zip(values, tensor.numpy().tolist(), strict=True))

    def total(self, *values: float) -> tuple[float, ...]:
        tensor = paddle.to_tensor(np.asarray(values, dtype=np.float64))
        paddle.distributed.all_reduce(tensor)
        return tuple(type(v)(x) for v, x in zip(values, tensor.numpy().tolist(), strict=True))

    def epoch_done(self, model: FusionModel, epoch: int, train_mse: float) -> None:
        if self._test_dir is not None:
            stem = self._test_dir / f"rank-{self.rank}-epoch-{epoch}"
            np.savez(stem.with_suffix(".npz"),
                     **{name: p.numpy() for name, p in model.named_parameters()})
            stem.with_suffix(".json").write_text(json.dumps(
                {"rank": self.rank, "world": self.world, "epoch": epoch,
                 "train_mse": train_mse, "hash": parameter_hash(model)}))


def main(argv: Sequence[str] | None = None) -> int:
    from movierec.models.cli import parser_for

    parser, commands = parser_for("train", "fusion")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) <= 1:
        args.nproc, args.ips = 1, []
        return commands.train(args)
    use_cpu(args.threads)
    return commands.train(args, Collective())


if __name__ == "__main__":
    sys.exit(main())
