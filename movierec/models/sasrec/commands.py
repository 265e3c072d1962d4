"""``movierec train sasrec`` and ``movierec evaluate sasrec``.

The CLI adds the common flags (``--dataset``, ``--data-dir``, ``--seed``,
``--artifacts``, and for evaluate ``--json`` and ``--artifact``); the flags below are
SASRec's own. Defaults are the documented ml-1m configuration (docs/sequence.md).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from movierec.data.source import home_dir, load_dataset
from movierec.data.splits import make_split, trained_through, training_ratings
from movierec.evaluation import artifacts, protocols, report, runner
from movierec.evaluation.protocols import PROTOCOL_SPLITS, split_for
from movierec.evaluation.ranking import evaluate as rank_evaluate
from movierec.models import reasons
from movierec.models.artifact import latest
from movierec.models.sasrec.data import ItemIndex, timed_sequences
from movierec.models.sasrec.encoder import MODEL, SasRecEncoder
from movierec.models.sasrec.export import export
from movierec.models.sasrec.train import TrainConfig, last_hidden, task_scorer
from movierec.models.sasrec.train import train as run_training

#: an artifact's ``fit_on`` when it was also trained on the validation ratings (a refit)
WITH_VALID = "train+valid"


def add_train_args(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("--split", choices=list(PROTOCOL_SPLITS.values()),
                        default="recbole_811", help="training data is this split's "
                        "training part (every rating, as interactions)")
    for name in ("dim", "layers", "heads", "max_len", "ffn", "batch", "max_epochs",
                 "patience", "eval_every", "warmup_steps", "horizon"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("dropout", "lr", "weight_decay"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    parser.add_argument("--crop", type=float, default=d.crop,
                        help="share of long histories trained on a random older window")
    parser.add_argument("--positions", choices=["newest", "oldest"], default=d.positions,
                        help="position 0 is the window's oldest item, or the newest item "
                             "sits at the last position")
    parser.add_argument("--shuffle-ties", action=argparse.BooleanOptionalAction,
                        default=d.shuffle_ties,
                        help="a random order inside same-second groups, each epoch "
                             "(default: the order they were recorded in)")
    parser.add_argument("--gaps", action=argparse.BooleanOptionalAction, default=d.gaps,
                        help="add the time since the rating before (doubling buckets) to "
                             "each input: whether a user is rating within one session")
    parser.add_argument("--schedule", choices=["cosine", "constant"], default=d.schedule,
                        help="learning rate after the warm-up: cosine decay to 0 at "
                             "--max-epochs, or constant")
    parser.add_argument("--time-budget", type=float, default=d.time_budget_s / 60,
                        help="minutes of training before stopping at the best epoch so far")
    parser.add_argument("--with-valid-epochs", type=int, default=0, metavar="E",
                        help="refit: train on the training part and the validation ratings "
                             "for exactly E epochs (the count a validation run chose; the "
                             "schedule still spans --max-epochs), with no validation")
    parser.add_argument("--train-seed", type=int, default=None,
                        help="seed of the weights and batches (default: --seed)")
    parser.add_argument("--checkpoint-dir", type=str, default=None,
                        help="where best.pt goes (default: $MOVIEREC_HOME/checkpoints/sasrec)")
    _runtime_args(parser)


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=list(PROTOCOL_SPLITS), default="leave_last_out")
    parser.add_argument("--no-baselines", action="store_true", help="score SASRec only")
    _runtime_args(parser)


def _runtime_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the CPU is shared)")
    parser.add_argument("--no-progress", action="store_true")


def _config(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values.update(time_budget_s=args.time_budget * 60, fixed_epochs=args.with_valid_epochs,
                  seed=args.seed if args.train_seed is None else args.train_seed)
    return TrainConfig(**values)


def train(args: argparse.Namespace) -> int:
    """Train on every rating of the split's training part, early-stop on its validation
    task, score its test task as served (numpy encoder), export."""
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = load_dataset(args.dataset, args.data_dir)
    split = make_split(data, args.split, seed=args.seed)
    valid, test = protocols.ranking_tasks(data, split)
    index = ItemIndex.of(data.movies["movie_id"])
    seen = training_ratings(data, split)
    config = _config(args)
    if config.fixed_epochs:     # a refit: the validation ratings are training data
        seen, valid = pd.concat([seen, split.valid]), None
    checkpoints = Path(args.checkpoint_dir or home_dir() / "checkpoints" / MODEL)
    result = run_training(timed_sequences(seen, index), index, valid, config,
                          progress=not args.no_progress, checkpoints=checkpoints)
    items = result.model.item_table().detach().numpy()
    scorer = task_scorer(lambda s, t: last_hidden(result.model, s, t), items, index, test)
    test_metrics = {k: round(v, 5) for k, v in rank_evaluate(scorer, test).items()}
    info = {"dataset": data.name, "data_checksum": data.checksum, "split": args.split,
            "trained_through": trained_through(seen), "split_seed": args.seed,
            "fit_on": WITH_VALID if config.fixed_epochs else "train",
            "metrics": {"test": test_metrics},
            "wall_seconds": round(time.perf_counter() - started, 1)}
    trained = np.isin(index.movie_ids, seen["movie_id"].to_numpy(np.int64))
    path = export(result, config, info, trained, data.movies,
                  reasons.for_movies(data.movies, seen), args.artifacts)
    print(f"sasrec: best epoch {result.best_epoch}, {result.seconds:.0f} s training, "
          f"test recall@10 {test_metrics['recall@10']:.4f} ndcg@10 {test_metrics['ndcg@10']:.4f}"
          f"\nartifact: {path}")
    return 0


def served_factory(encoder: SasRecEncoder):
    """The served user-id path's scores of a task: each user's history frame, in the
    catalog's order, through the numpy encoder (what the embedder runs)."""
    index = ItemIndex(encoder.movie_ids)

    def encode(seqs: list[np.ndarray], times: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(seqs), encoder.dim), np.float32)
        for i, (seq, seconds) in enumerate(zip(seqs, times, strict=True)):
            if len(seq):
                out[i] = encoder.weights.encode(seq, seconds)
        return out
    return lambda task: task_scorer(encode, encoder.vectors, index, task)


def evaluate(args: argparse.Namespace) -> int:
    """SASRec beside the baselines on the protocol's test users (shared protocol code)."""
    path = args.artifact or latest(MODEL, args.artifacts)
    data = load_dataset(args.dataset, args.data_dir)
    split_name = split_for(args.protocol)
    meta = artifacts.check(path, data, split_name, "movierec train sasrec")
    built = protocols.build(data, args.protocol, int(meta["split_seed"]))
    refit = meta.get("fit_on") == WITH_VALID      # trained on the validation ratings
    rows = {MODEL: runner.measure(served_factory(SasRecEncoder.load(path)), built,
                                  valid={} if refit else None)}
    if not args.no_baselines:
        rows.update(runner.run_baselines(built))
    result = {"dataset": data.name, "protocol": args.protocol, "split": split_name,
              "split_seed": meta["split_seed"], "artifact": str(path),
              "users": {"valid": int(built.valid.rows.size), "test": int(built.test.rows.size)},
              "rows": rows}
    print(json.dumps(result, indent=2) if args.json else report.text_table(result))
    return 0
