"""Seconds per SASRec training epoch (docs/sequence.md, "Training cost").

Runs ``--epochs`` epochs of :func:`movierec.models.sasrec.train` 's training pass on the
ml-1m ``leave_last_out`` training sequences with the default batches and prints the
wall seconds and mean loss of each; ``--reference`` swaps in torch's own dropout and
``cross_entropy`` (the kernels before the change) for the before/after comparison.

    MOVIELENS_DIR=../shared/data/ml-1m .venv/bin/python benchmarks/sasrec_epoch.py \\
        --dim 64 --threads 2 [--reference]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header  # noqa: E402
from movierec.data.source import load_dataset  # noqa: E402
from movierec.data.splits import make_split, training_ratings  # noqa: E402
from movierec.models.sasrec import model as sasrec_model  # noqa: E402
from movierec.models.sasrec import train as sasrec_train  # noqa: E402
from movierec.models.sasrec.data import ItemIndex, timed_sequences  # noqa: E402


def _reference_kernels() -> None:
    """torch's dropout and full cross-entropy, as before the chunked kernels."""
    sasrec_model.ByteDropout = nn.Dropout
    sasrec_train.full_cross_entropy = lambda h, table, t: nn.functional.cross_entropy(
        h @ table.T, t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=sasrec_train.TrainConfig().dim)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--gaps", action=argparse.BooleanOptionalAction,
                        default=sasrec_train.TrainConfig().gaps,
                        help="the gap table (the default; --no-gaps: without it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.reference:
        _reference_kernels()
    header("SASRec seconds per training epoch" + (" (reference kernels)"
                                                 if args.reference else ""))
    data = load_dataset("ml-1m")
    split = make_split(data, "leave_last_out", seed=2026)
    index = ItemIndex.of(data.movies["movie_id"])
    config = sasrec_train.TrainConfig(dim=args.dim, gaps=args.gaps)
    rng, seqs, model, optimizer, scheduler = sasrec_train._start(   # training's own setup
        timed_sequences(training_ratings(data, split), index), index, config)
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        loss = sasrec_train._epoch(model, seqs, config, optimizer, rng, scheduler)
        print(f"epoch {epoch}: {time.perf_counter() - started:.1f} s, loss {loss:.4f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
