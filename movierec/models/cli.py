"""``movierec train MODEL``, ``movierec evaluate MODEL`` and ``movierec evaluate serving``.

Common flags are added here; each model package's ``commands`` module adds its own
(``add_train_args``/``add_evaluate_args``) and does the work (``train``/``evaluate``);
``evaluate serving`` (every served path beside the baselines) lives in
:mod:`movierec.evaluation.commands`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path

from movierec.data.splits import DEFAULT_SEED
from movierec.models import registry

MODELS = registry.NAMES
#: what each action can take, and the module that does it
TARGETS = {"train": {m.name: m.commands for m in registry.MODELS},
           "evaluate": {**{m.name: m.commands for m in registry.MODELS},
                        "serving": "movierec.evaluation.commands",
                        "reasons": "movierec.evaluation.explanations",
                        "new-movies": "movierec.evaluation.new_movies",
                        "onboarding": "movierec.evaluation.onboarding_command"}}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="ml-1m", help="ml-1m, ml-100k or synthetic[-UxM]")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="directory with the MovieLens files (default: MOVIELENS_DIR)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="artifacts root (default: MOVIEREC_ARTIFACTS or ./artifacts)")


def parser_for(action: str, model: str) -> tuple[argparse.ArgumentParser, object]:
    """The flag parser of ``movierec ACTION MODEL`` and the commands module that acts."""
    commands = importlib.import_module(TARGETS[action][model])
    parser = argparse.ArgumentParser(prog=f"movierec {action} {model}")
    _common(parser)
    if action == "evaluate":
        parser.add_argument("--json", action="store_true", help="print one JSON object")
    if action == "evaluate" and model in MODELS:
        parser.add_argument("--artifact", type=Path, default=None,
                            help="artifact version directory (default: the latest)")
    getattr(commands, f"add_{action}_args")(parser)
    return parser, commands


def _run(action: str, argv: Sequence[str]) -> int:
    top = argparse.ArgumentParser(prog=f"movierec {action}")
    top.add_argument("model", choices=list(TARGETS[action]))
    known, rest = top.parse_known_args(list(argv)[:1])
    parser, commands = parser_for(action, known.model)
    args = parser.parse_args([*rest, *list(argv)[1:]])
    return int(getattr(commands, action)(args) or 0)


def train_main(argv: Sequence[str]) -> int:
    return _run("train", argv)


def evaluate_main(argv: Sequence[str]) -> int:
    return _run("evaluate", argv)
