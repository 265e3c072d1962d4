"""``movierec train pinsage`` and ``movierec evaluate pinsage``.

The CLI adds the common flags (``--dataset``, ``--data-dir``, ``--seed``,
``--artifacts``, and for evaluate ``--json`` and ``--artifact``); the flags below are
PinSage's own. Defaults are the documented ml-1m configuration (docs/pinsage.md).

``--nproc N`` (N > 1) or ``--nnodes M`` (M > 1) trains data-parallel: the command starts
``torchrun`` (:mod:`movierec.models.launch`) running :mod:`movierec.models.pinsage.ddp`
with the other flags on N ranks (per node), and returns its exit code; rank logs go to
``<artifacts root>/logs/pinsage-<time>``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from movierec.data.source import home_dir, load_dataset
from movierec.data.splits import make_split, trained_through, training_ratings
from movierec.evaluation import artifacts, protocols, report, runner
from movierec.evaluation.bpr import BprConfig, bpr_row
from movierec.evaluation.protocols import (
    PROTOCOL_SPLITS,
    ranking_tasks,
    split_for,
)
from movierec.evaluation.ranking import evaluate as rank_evaluate
from movierec.evaluation.serving import ItemSpace, pinsage_history
from movierec.models import launch, reasons
from movierec.models.artifact import artifacts_root, latest
from movierec.models.pinsage.aggregation import POOLS, user_scorer
from movierec.models.pinsage.calibration import fit_both
from movierec.models.pinsage.ddp import LR_SCALING, scaled
from movierec.models.pinsage.encoder import MODEL, PinSageEncoder
from movierec.models.pinsage.export import export
from movierec.models.pinsage.graph import build_training_graph
from movierec.models.pinsage.sampler import WalkConfig
from movierec.models.pinsage.train import SingleProcess, TrainConfig, served_arrays
from movierec.models.pinsage.train import train as run_training

#: the module each rank of a data-parallel run executes (under torchrun)
DDP_MODULE = "movierec.models.pinsage.ddp"
#: flags that say where the ranks run; not passed on to them
LAUNCH_FLAGS = ("nproc", "nnodes", "node_rank", "master_addr", "master_port")


def add_train_args(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("--split", choices=list(PROTOCOL_SPLITS.values()), default="recbole_811",
                        help="training data is this split's training part")
    parser.add_argument("--objective", choices=["softmax", "margin"], default=d.objective)
    parser.add_argument("--aggregation", choices=["mean", "rating"], default=d.aggregation)
    parser.add_argument("--dim", type=int, default=d.dim)
    parser.add_argument("--layers", type=int, default=d.layers)
    parser.add_argument("--temperature", type=float, default=d.temperature)
    parser.add_argument("--target-frac", type=float, default=d.target_frac)
    parser.add_argument("--batch-users", type=int, default=d.batch_users)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--dropout", type=float, default=d.dropout)
    parser.add_argument("--max-epochs", type=int, default=d.max_epochs)
    parser.add_argument("--patience", type=int, default=d.patience)
    parser.add_argument("--time-budget", type=float, default=d.time_budget_s / 60,
                        help="minutes of training before stopping at the best epoch so far")
    parser.add_argument("--split-roles", action=argparse.BooleanOptionalAction,
                        default=d.split_roles, help="separate input and output item vectors")
    parser.add_argument("--item-bias", action=argparse.BooleanOptionalAction,
                        default=d.item_bias, help="a learned item bias (extra vector column)")
    parser.add_argument("--user-layers", type=int, default=d.user_layers,
                        help="tanh layers of the user tower after pooling")
    parser.add_argument("--free-dim", type=int, default=d.free_dim,
                        help="free per-movie vector columns beside the GNN embedding")
    parser.add_argument("--free-shared", action=argparse.BooleanOptionalAction,
                        default=d.free_shared, help="one free vector per movie for both roles")
    parser.add_argument("--free-bias", action=argparse.BooleanOptionalAction,
                        default=d.free_bias, help="a free per-movie bias beside the GNN's")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay,
                        help="decoupled weight decay of the other parameters (AdamW)")
    parser.add_argument("--per-target", action=argparse.BooleanOptionalAction,
                        default=d.per_target, help="the loss weighs each target, not each user")
    parser.add_argument("--input-scale", action=argparse.BooleanOptionalAction,
                        default=d.input_scale, help="learn each movie's weight in a user's bag")
    parser.add_argument("--target-power", type=float, default=d.target_power,
                        help="a target weighs its rating weight to this power (0: all 1)")
    parser.add_argument("--free-decay", type=float, default=d.free_decay,
                        help="decoupled weight decay of the free vectors (AdamW)")
    parser.add_argument("--pool", choices=list(POOLS), default=d.pool)
    parser.add_argument("--cosine", action=argparse.BooleanOptionalAction, default=d.cosine,
                        help="unit user and output vectors (score = cosine [+ bias])")
    parser.add_argument("--short-frac", type=float, default=None,
                        help="share of training users whose input is cut to their first "
                             "--short-len movies (default: 1 for users_80_10_10, else "
                             f"{d.short_frac:g})")
    parser.add_argument("--short-len", type=int, default=d.short_len)
    parser.add_argument("--ema", type=float, default=d.ema,
                        help="validate and export a moving average of the weights (0: off)")
    parser.add_argument("--train-seed", type=int, default=None,
                        help="seed of the initial weights, walks and batches (default: "
                             "--seed, which also seeds the split)")
    parser.add_argument("--calibrate-bias", action=argparse.BooleanOptionalAction,
                        default=True, help="fit the served item-bias weight by bag size on "
                        "validation after training (movierec.models.pinsage.calibration)")
    parser.add_argument("--neighbors", type=int, default=d.walks.num_neighbors)
    parser.add_argument("--walks", type=int, default=d.walks.num_random_walks)
    parser.add_argument("--checkpoint-dir", type=str, default=None,
                        help="where best.pt goes (default: $MOVIEREC_HOME/checkpoints/pinsage)")
    _common_runtime_args(parser)
    _distributed_args(parser)


def _distributed_args(parser: argparse.ArgumentParser) -> None:
    nodes = launch.Nodes()
    group = parser.add_argument_group("data-parallel training (torchrun, gloo on CPU)")
    group.add_argument("--nproc", type=int, default=1,
                       help="ranks on this node (N > 1: data-parallel under torchrun)")
    group.add_argument("--nnodes", type=int, default=nodes.count,
                       help="nodes of a multi-node job (static rendezvous)")
    group.add_argument("--node-rank", type=int, default=nodes.rank)
    group.add_argument("--master-addr", default=nodes.master,
                       help="address of node 0 (multi-node)")
    group.add_argument("--master-port", type=int, default=nodes.port)
    group.add_argument("--lr-scaling", choices=LR_SCALING, default=LR_SCALING[0],
                       help="with W ranks a step takes W x --batch-users users: the rate is "
                            "multiplied by sqrt(W) (or W) and the weight average's decay "
                            "raised to W; none keeps both")


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=list(PROTOCOL_SPLITS), default="recbole")
    parser.add_argument("--no-baselines", action="store_true", help="score PinSage only")
    parser.add_argument("--bpr-epochs", type=int, default=BprConfig.epochs)
    _common_runtime_args(parser)


def _common_runtime_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the CPU is shared)")
    parser.add_argument("--no-progress", action="store_true")


#: the cold-start protocol gives each test user their first movies only: train that way
SPLIT_SHORT_FRAC = {"users_80_10_10": 1.0}


def _config(args: argparse.Namespace) -> TrainConfig:
    """The flags named like a :class:`TrainConfig` field, plus those that need converting."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values.update(
        walks=WalkConfig(num_random_walks=args.walks, num_neighbors=args.neighbors),
        time_budget_s=args.time_budget * 60,
        short_frac=(SPLIT_SHORT_FRAC.get(args.split, TrainConfig.short_frac)
                    if args.short_frac is None else args.short_frac),
        seed=args.seed if args.train_seed is None else args.train_seed)
    return TrainConfig(**values)


def train_parser(prog: str = "movierec train pinsage") -> argparse.ArgumentParser:
    """Every flag of ``movierec train pinsage`` (the common ones included)."""
    from movierec.models.cli import _common

    parser = argparse.ArgumentParser(prog=prog)
    _common(parser)
    add_train_args(parser)
    return parser


def rank_argv(args: argparse.Namespace) -> list[str]:
    """The flags that reproduce ``args`` for each rank, less where the ranks run."""
    argv: list[str] = []
    for action in train_parser()._actions:
        if not action.option_strings or action.dest in (*LAUNCH_FLAGS, "help"):
            continue
        value, flag = getattr(args, action.dest), action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(flag if value else f"--no-{flag[2:]}")
        elif action.nargs == 0:  # store_true
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def launch_ranks(args: argparse.Namespace) -> int:
    """Train on ``--nproc`` ranks (per node) under torchrun; the launcher's exit code."""
    log_dir = (artifacts_root(args.artifacts) / "logs"
               / f"{MODEL}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    nodes = launch.Nodes(args.nnodes, args.node_rank, args.master_addr, args.master_port)
    cmd = launch.torchrun_command(DDP_MODULE, args.nproc, rank_argv(args), log_dir, nodes)
    print(f"pinsage: {args.nproc} rank(s) on node {nodes.rank} of {nodes.count}; "
          f"rank logs in {log_dir}", flush=True)
    return launch.run(cmd, log_dir)


def train(args: argparse.Namespace, dist: SingleProcess | None = None) -> int:
    """Train on the relevant ratings of the split's training part (the protocol's
    relevance rule), early-stop on its validation task, score its test task, export.

    With ``--nproc``/``--nnodes`` above 1 (and no ``dist``) start the ranks instead;
    each rank calls this with its :class:`movierec.models.pinsage.ddp.Gloo`, and rank 0
    alone checkpoints, calibrates, tests and exports.
    """
    if dist is None and (args.nproc > 1 or args.nnodes > 1):
        return launch_ranks(args)
    dist = dist or SingleProcess()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = load_dataset(args.dataset, args.data_dir)
    split = make_split(data, args.split, seed=args.seed)
    protocol = protocols.protocol_of(args.split)
    graph = build_training_graph(data, protocols.relevant(split.train,
                                                          protocols.MIN_RATING[protocol]))
    valid, test = ranking_tasks(data, split)
    config = _config(args)
    config = scaled(config, dist.world, args.lr_scaling)
    checkpoints = (Path(args.checkpoint_dir or home_dir() / "checkpoints" / MODEL)
                   if dist.is_main else None)
    result = run_training(graph, valid, config, checkpoints, progress=not args.no_progress,
                          dist=dist)
    if not dist.is_main:
        return 0
    served = served_arrays(result.model, result.export_graphs)
    calibration = None
    if args.calibrate_bias and served.tower.bias:
        calibration = fit_both(served.tower, served.item_vectors, valid, config.aggregation)
        served = replace(served, tower=calibration.history.apply(served.tower))
        for name, fit in (("history", calibration.history), ("liked", calibration.liked)):
            print(f"pinsage: {name} bias weight {fit.beta0:g} * (n / {fit.reference_size:g}) "
                  f"** {fit.power:g}: valid recall@10 {fit.valid['recall@10']:.4f} ndcg@10 "
                  f"{fit.valid['ndcg@10']:.4f} (as trained {fit.trained['recall@10']:.4f} / "
                  f"{fit.trained['ndcg@10']:.4f})")
    scorer = user_scorer(served.tower, served.item_vectors, test.history, config.aggregation)
    test_metrics = {k: round(v, 5) for k, v in rank_evaluate(scorer, test).items()}
    info = {"dataset": data.name, "data_checksum": data.checksum, "split": args.split,
            "trained_through": trained_through(training_ratings(data, split)),
            "split_seed": args.seed, "metrics": {"test": test_metrics},
            "wall_seconds": round(time.perf_counter() - started, 1)}
    path = export(result, graph, config, info, args.artifacts, calibration,
                  reasons.for_movies(data.movies, training_ratings(data, split)), data.movies)
    print(f"pinsage: best epoch {result.best_epoch}, {result.seconds:.0f} s training, "
          f"test recall@10 {test_metrics['recall@10']:.4f} ndcg@10 {test_metrics['ndcg@10']:.4f}"
          f"\nartifact: {path}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """PinSage beside the baselines on the protocol's test users (shared protocol code)."""
    torch.set_num_threads(args.threads)
    path = args.artifact or latest(MODEL, args.artifacts)
    data = load_dataset(args.dataset, args.data_dir)
    split_name = split_for(args.protocol)
    meta = artifacts.check(path, data, split_name, "movierec train pinsage")
    built = protocols.build(data, args.protocol, int(meta["split_seed"]))
    items = ItemSpace.load(path, built.movie_ids)
    rows = {MODEL: runner.measure(pinsage_history(PinSageEncoder.load(path), items), built)}
    if not args.no_baselines:
        rows.update(runner.run_baselines(built))
        if args.protocol != "cold_start":  # BPR has no vector for users unseen in training
            rows["bpr"] = bpr_row(built, BprConfig(epochs=args.bpr_epochs, seed=args.seed))
    result = {"dataset": data.name, "protocol": args.protocol, "split": split_name,
              "split_seed": meta["split_seed"], "artifact": str(path),
              "users": {"valid": int(built.valid.rows.size), "test": int(built.test.rows.size)},
              "rows": rows}
    print(json.dumps(result, indent=2) if args.json else report.text_table(result))
    return 0
