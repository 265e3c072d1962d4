"""``movierec train fusion`` and ``movierec evaluate fusion``.

The CLI adds ``--dataset``, ``--data-dir``, ``--seed``, ``--artifacts`` (and for
evaluate ``--json`` and ``--artifact``); this module adds one flag per
:class:`FusionConfig` field (``--hidden``, ``--lr``, ``--max-minutes`` ...) plus
run options. Training uses the ratings ``--split`` allows (default: the ``random_90_10``
split's training part; see :func:`movierec.data.splits.training_ratings`), carves the
early-stopping slice out of them, exports a new artifact version and prints its path.

``--nproc N`` (N > 1) trains data-parallel on N processes: this command re-launches
itself as :mod:`movierec.models.fusion.ddp` under ``paddle.distributed.launch``
(:mod:`movierec.models.launch`; gloo on CPU, ``--ips`` for several machines), rank logs
under ``<artifacts>/logs/fusion-<time>``; rank 0 exports.
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
    parser.add_argument("--nproc", type=int, default=1,
                        help="data-parallel processes (per machine with --ips); >1: "
                             "paddle.distributed.launch, --batch-size is the global batch")
    parser.add_argument("--ips", type=lambda text: [ip for ip in text.split(",") if ip],
                        default=[], help="machines of a multi-node run, comma-separated "
                                         "(run the same command on each)")


def config_from_args(args: argparse.Namespace) -> FusionConfig:
    return FusionConfig(**{f.name: getattr(args, f.name) for f in fields(FusionConfig)})


def _checkpoint_path(args: argparse.Namespace) -> Path:
    return args.checkpoint_dir or home_dir() / "checkpoints" / "fusion" / \
        f"{args.dataset}-s{args.seed}"


def _checkpoint_dir(args: argparse.Namespace) -> Path:
    path = _checkpoint_path(args)
    if not args.resume:
        shutil.rmtree(path, ignore_errors=True)
    return path


def rank_argv(args: argparse.Namespace) -> list[str]:
    """Flags that make a rank parse ``args`` again (without ``--nproc``/``--ips``), paths
    resolved here so every rank uses the same ones."""
    from movierec.models.artifact import artifacts_root

    out = ["--dataset", args.dataset, "--seed", str(args.seed), "--artifacts",
           str(artifacts_root(args.artifacts)), "--split", args.split, "--threads",
           str(args.threads), "--checkpoint-dir", str(_checkpoint_path(args).resolve())]
    if args.data_dir is not None:
        out += ["--data-dir", str(args.data_dir.resolve())]
    out += [flag for flag in ("--resume", "--no-progress")
            if getattr(args, flag[2:].replace("-", "_"))]
    for f in fields(FusionConfig):
        flag, value = f.name.replace("_", "-"), getattr(args, f.name)
        if isinstance(value, bool):
            out.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            out += [f"--{flag}", repr(value) if isinstance(value, float) else str(value)]
    return out


def _launch(args: argparse.Namespace) -> int:
    """Train on ``args.nproc`` ranks (per machine) under ``paddle.distributed.launch``."""
    from movierec.models import launch
    from movierec.models.artifact import artifacts_root

    log_dir = artifacts_root(args.artifacts) / "logs" / f"fusion-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = launch.paddle_command("movierec.models.fusion.ddp", args.nproc, rank_argv(args),
                                log_dir, ips=args.ips)
    print(f"fusion: {args.nproc} ranks per machine, rank logs in {log_dir}", file=sys.stderr)
    return launch.run(cmd, log_dir)


def train(args: argparse.Namespace, parallel=None) -> int:
    """Train, score on the test split, export; print the artifact directory.

    ``parallel``: this rank's :class:`~movierec.models.fusion.train.Parallel` when run by
    :mod:`.ddp` (only rank 0 scores and exports); without it, ``--nproc`` > 1 or
    ``--ips`` launches the ranks.
    """
    if parallel is None and (args.nproc > 1 or args.ips):
        return _launch(args)
    from movierec.models.fusion.evaluate import hidden_ids_key
    from movierec.models.fusion.export import export
    from movierec.models.fusion.train import (
        Parallel,
        gradient_bytes,
        split_metrics,
        train_model,
        use_cpu,
    )

    started = time.monotonic()
    par = parallel or Parallel()
    use_cpu(args.threads)
    cfg = config_from_args(args)
    data = profiled(load_dataset(args.dataset, args.data_dir))   # the tower needs profiles
    split = make_split(data, args.split, args.seed)
    train_part = training_ratings(data, split)
    checkpoints = _checkpoint_dir(args) if par.is_main else _checkpoint_path(args)
    result = train_model(data, train_part, cfg, args.seed, checkpoints,
                         progress=not args.no_progress, resume=args.resume, parallel=par)
    if not par.is_main:
        return 0
    metrics = {"valid_rmse": result.valid_rmse, **split_metrics(result, split.test, args.split)}
    meta = {"split": args.split, "split_seed": args.seed, "seed": args.seed, "metrics": metrics,
            "trained_through": trained_through(train_part),
            "label_space": "stars (1-5), squared error", "best_epoch": result.best_epoch,
            "history": result.history, "training_seconds": round(result.seconds, 1),
            "wall_seconds": round(time.monotonic() - started, 1), "threads": args.threads,
            "num_parameters": int(sum(p.size for p in result.model.parameters())),
            "world_size": par.world, "per_rank_batch": -(-cfg.batch_size // par.world),
            "allreduce_bytes_per_step": gradient_bytes(result.model) if par.world > 1 else 0,
            "gradient_bytes": gradient_bytes(result.model)}
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
