"""The ``movierec`` command line: one entry point, one sub-command per job.

Each sub-command lives in the module that owns the work and is imported only when
used, so ``movierec --help`` stays fast and a service's image needs only its own
dependencies. A sub-command whose module has not been written yet says so.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

from movierec import registry

# name -> (help, {target: "module:function"}); the function takes the remaining argv.
COMMANDS: dict[str, tuple[str, dict[str, str]]] = {
    "data": ("fetch MovieLens, print statistics and splits, write synthetic data",
             {"": "movierec.data.cli:main"}),
    "train": ("train a model (fusion, pinsage) and export a versioned artifact "
              "(--from-catalog: from a snapshot of the catalog)",
              {"": "movierec.stack.jobs:train_main"}),
    "snapshot": ("write the catalog, read in one transaction, as a data set (catalog-<time>)",
                 {"": "movierec.stack.jobs:snapshot_main"}),
    "retrain": ("snapshot, train, validate against the serving models, promote (or refuse)",
                {"": "movierec.stack.retrain:retrain_main"}),
    "rollback": ("serve each model's previous version again",
                 {"": "movierec.stack.retrain:rollback_main"}),
    "evaluate": ("evaluate a model against baselines on its split",
                 {"": "movierec.models.cli:evaluate_main"}),
    "load": ("load the catalog into PostgreSQL or model vectors into Milvus",
             {"catalog": "movierec.stack.jobs:load_catalog_main",
              "vectors": "movierec.stack.jobs:load_vectors_main"}),
    "serve": ("run one service in the foreground",
              {s.name: s.entry for s in (*registry.SERVICES, *registry.TOOLS)}),
    "up": ("start the stores and every service locally, then serve until Ctrl-C",
           {"": "movierec.stack.up:main"}),
    "recommend": ("print recommendations for a profile, liked movies, a user or a movie",
                  {"": "movierec.recommend:main"}),
    "token": ("issue a user token for local use (or a new signing key set)",
              {"": "movierec.apps.gateway.token_cli:main"}),
    "loadtest": ("run a ghz config file against a local server and print ghz's summary",
                 {"": "movierec.loadtest:main"}),
    "trace": ("draw one request's spans from a trace file (MOVIEREC_TRACE_FILE) as a PNG",
              {"waterfall": "movierec.tracing.waterfall:main"}),
}


#: a service answers many small requests in one process: a BLAS/OpenMP thread pool per
#: process only spins against its event loop on these tiny matrices (measured in
#: docs/benchmarks.md), so ``serve`` starts with one thread unless the variable is set
SERVICE_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="movierec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (text, targets) in COMMANDS.items():
        named = [t for t in targets if t]
        cmd = sub.add_parser(name, help=text, description=text, add_help=bool(named))
        if named:
            cmd.add_argument("target", choices=named, help=" | ".join(named))
        else:
            cmd.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def resolve(spec: str):
    """Import ``module:function``; None when the module does not exist yet."""
    module_name, function = spec.split(":")
    try:
        found = importlib.util.find_spec(module_name)
    except ModuleNotFoundError:
        found = None
    if found is None:
        return None
    return getattr(importlib.import_module(module_name), function)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)
        return 2
    targets = COMMANDS[argv[0]][1]
    if "" in targets:
        label, spec, rest = argv[0], targets[""], argv[1:]
    else:
        target = parser.parse_args(argv[:2]).target
        label, spec, rest = f"{argv[0]} {target}", targets[target], argv[2:]
    if argv[0] == "serve":  # before the service's imports load numpy
        for variable in SERVICE_THREAD_VARIABLES:
            os.environ.setdefault(variable, "1")
    function = resolve(spec)
    if function is None:
        print(f"movierec {label}: not available in this build yet "
              f"({spec.split(':')[0]} does not exist)", file=sys.stderr)
        return 2
    return int(function(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
