"""``movierec evaluate serving``: every served path beside the baselines, one protocol.

Every registered model's artifact must have been trained on the protocol's split of the
same data files (``movierec train MODEL --split SPLIT``); the baselines are
fitted in the same run on the same split. Writes ``serving-<protocol>.json``,
``.md`` and ``.png`` under ``--out`` (when given) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from movierec.data.source import load_dataset
from movierec.evaluation import artifacts, protocols, report, runner
from movierec.evaluation.serving import PATHS, PathScorers, ServedModels
from movierec.models import registry
from movierec.models.user_input import DEFAULT_HISTORY_LIMIT

SERVING_PROTOCOLS = ("recbole", "cold_start", "leave_last_out", "global_time")
#: paths a protocol can evaluate: cold-start users are unknown, so no id
PROTOCOL_PATHS = {"recbole": PATHS, "cold_start": ("profile", "liked", "user_id", "next"),
                  "leave_last_out": PATHS, "global_time": PATHS}


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=SERVING_PROTOCOLS, default="recbole")
    for model in registry.NAMES:
        parser.add_argument(f"--{model}", type=Path, default=None,
                            help=f"{model} artifact: a version directory, a model directory "
                                 "or an artifacts root (default: the latest under --artifacts)")
    parser.add_argument("--history-limit", type=int, default=DEFAULT_HISTORY_LIMIT,
                        help="newest ratings the user-id path uses (EMBEDDER_HISTORY_LIMIT)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for serving-<protocol>.json/.md/.png")


def evaluate(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    data = load_dataset(args.dataset, args.data_dir)
    split = protocols.split_for(args.protocol)
    paths = {m: artifacts.resolve(getattr(args, m), m, args.artifacts) for m in registry.NAMES}
    metas = [artifacts.check(p, data, split, f"movierec train {m}") for m, p in paths.items()]
    seed = artifacts.common_seed(metas)
    built = protocols.build(data, args.protocol, seed)
    models = ServedModels.load(paths, built.movie_ids, args.history_limit)
    scorers = PathScorers(models, built, data.users).factories(PROTOCOL_PATHS[args.protocol])
    rows = {name: runner.measure(factory, built) for name, factory in scorers.items()}
    rows.update(runner.run_baselines(built))
    result = {"dataset": data.name, "protocol": args.protocol, "split": split,
              "split_seed": seed,
              "artifacts": {m: str(p) for m, p in paths.items()},
              "history_limit": args.history_limit,
              "users": {"valid": int(built.valid.rows.size), "test": int(built.test.rows.size)},
              "rows": rows, "seconds": round(time.perf_counter() - started, 1)}
    if args.out is not None:
        report.write(result, args.out, f"serving-{args.protocol}")
    print(json.dumps(result, indent=2) if args.json else report.text_table(result))
    return 0
