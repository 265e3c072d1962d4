"""``movierec train fusion`` and ``movierec evaluate fusion``.

The CLI adds ``--dataset``, ``--data-dir``, ``--seed``, ``--artifacts`` (and for
evaluate ``--json`` and ``--artifact``); this module adds one flag per
:class:`FusionConfig` field (``--hidden``, ``--lr``, ``--max-minutes`` ...) plus
run options. Training uses the ratings ``--split`` allows (default: the ``random_90_10``
split's training part; see :func:`movierec.data.splits.training_ratings`), carves the
early-stopping slice out of them, exports a new artifact version and prints its path.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import fields
from pathlib import Path

from movierec.data.movielens import profiled
from movierec.data.source import home_dir, load_dataset
from movierec.data.splits import make_split, trained_through, training_ratings
from movierec.models import reasons
from movierec.models.fusion.model import FusionConfig

SPLIT = "random_90_10"
#: splits fusion can train on: ``training_ratings`` of the split (no held-out rating)
TRAIN_SPLITS = ("random_90_10", "recbole_811", "users_80_10_10", "time_80_10_10")


def add_train_args(parser: argparse.ArgumentParser) -> None:
    defaults = FusionConfig()
    for f in fields(FusionConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value,
                                help=f"(default {value})")
    parser.add_argument("--split", choices=TRAIN_SPLITS, default=SPLIT,
                        help="train on the ratings this split allows (evaluation protocols)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for Paddle")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="default $MOVIEREC_HOME/checkpoints/fusion/<dataset>-s<seed>")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint's last epoch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> FusionConfig:
    return FusionConfig(**{f.name: getattr(args, f.name) for f in fields(FusionConfig)})


def _checkpoint_dir(args: argparse.Namespace) -> Path:
    path = args.checkpoint_dir or home_dir() / "checkpoints" / "fusion" / \
        f"{args.dataset}-s{args.seed}"
    if not args.resume:
        shutil.rmtree(path, ignore_errors=True)
    return path


def train(args: argparse.Namespace) -> int:
    """Train, score on the test split, export; print the artifact directory."""
    from movierec.models.fusion.evaluate import hidden_ids_key
    from movierec.models.fusion.export import export
    from movierec.models.fusion.train import split_metrics, train_model, use_cpu

    started = time.monotonic()
    use_cpu(args.threads)
    cfg = config_from_args(args)
    data = profiled(load_dataset(args.dataset, args.data_dir))   # the tower needs profiles
    split = make_split(data, args.split, args.seed)
    train_part = training_ratings(data, split)
    result = train_model(data, train_part, cfg, args.seed, _checkpoint_dir(args),
                         progress=not args.no_progress, resume=args.resume)
    metrics = {"valid_rmse": result.valid_rmse, **split_metrics(result, split.test, args.split)}
    meta = {"split": args.split, "split_seed": args.seed, "seed": args.seed, "metrics": metrics,
            "trained_through": trained_through(train_part),
            "label_space": "stars (1-5), squared error", "best_epoch": result.best_epoch,
            "history": result.history, "training_seconds": round(result.seconds, 1),
            "wall_seconds": round(time.monotonic() - started, 1), "threads": args.threads,
            "num_parameters": int(sum(p.size for p in result.model.parameters()))}
    path = export(result.model, cfg, result.vocab, data, meta, args.artifacts,
                  reasons.for_movies(data.movies, train_part))
    hidden = hidden_ids_key(args.split)
    print(f"fusion: valid RMSE {result.valid_rmse:.4f}, test RMSE {metrics['test']['rmse']:.4f} "
          f"({hidden.replace('_', ' ')} {metrics['test_' + hidden]['rmse']:.4f}) after "
          f"{result.best_epoch} epochs, {time.monotonic() - started:.0f} s")
    print(path)
    return 0


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    """No fusion-specific evaluation flags (the split comes from the artifact)."""


def evaluate(args: argparse.Namespace) -> int:
    """Score an artifact (``--artifact`` or the latest) on its test split."""
    from movierec.models.fusion.evaluate import evaluate_artifact, format_report
    from movierec.models.fusion.inference import resolve

    path = resolve(args.artifact, args.artifacts)
    data = load_dataset(args.dataset, args.data_dir)
    result = evaluate_artifact(path, data)
    if result["split_seed"] != args.seed:
        print(f"note: using the artifact's split seed {result['split_seed']}, not --seed "
              f"{args.seed}, so the test ratings are the held-out ones", file=sys.stderr)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0
