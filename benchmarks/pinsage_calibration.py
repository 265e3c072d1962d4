"""PinSage's served bias weight fitted on valid for existing artifacts: valid and test of
both served paths as trained (weight 1) and as fitted (:mod:`movierec.models.pinsage.calibration`).

For artifacts trained before the fit existed (or with other seeds), this is what
``movierec train pinsage`` would have stored; the network and the item vectors are the
artifact's. ``--scan`` fits each ``--betas`` value alone (every power) and prints its
validation score, to see the surface beyond the grid.

    MOVIELENS_DIR=../shared/data/ml-1m .venv/bin/python benchmarks/pinsage_calibration.py \\
        ARTIFACT [ARTIFACT ...] [--protocol recbole|cold_start|leave_last_out] \\
        [--scan --betas 1.2,1.3,1.5,2.0]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header  # noqa: E402
from movierec.data.source import load_dataset  # noqa: E402
from movierec.evaluation.protocols import build  # noqa: E402
from movierec.evaluation.ranking import evaluate  # noqa: E402
from movierec.models.artifact import read_metadata  # noqa: E402
from movierec.models.pinsage.aggregation import user_scorer  # noqa: E402
from movierec.models.pinsage.calibration import BETAS, fit_bias_weight  # noqa: E402
from movierec.models.pinsage.encoder import PinSageEncoder  # noqa: E402


def _pair(metrics: dict) -> list[float]:
    return [round(metrics["recall@10"], 4), round(metrics["ndcg@10"], 4)]


def report(path: Path, protocol: str, betas: tuple[float, ...], scan: bool) -> dict:
    built = build(load_dataset(read_metadata(path)["dataset"]), protocol,
                  int(read_metadata(path)["split_seed"]))
    encoder = PinSageEncoder.load(path)
    trained = replace(encoder.tower, bias_scale=1.0, bias_power=0.0)
    out: dict = {"artifact": str(path), "protocol": protocol}
    for name, scheme in (("user id", encoder.aggregation), ("liked ids", "mean")):
        if scan:
            out[name] = {str(b): round(sum(_pair(fit_bias_weight(
                trained, encoder.vectors, built.valid, scheme, betas=(b,)).valid)), 4)
                for b in betas}
            continue
        fit = fit_bias_weight(trained, encoder.vectors, built.valid, scheme, betas=betas)
        test = {label: _pair(evaluate(user_scorer(tower, encoder.vectors, built.test.history,
                                                  scheme), built.test))
                for label, tower in (("as trained", trained), ("fitted", fit.apply(trained)))}
        out[name] = {"beta0": fit.beta0, "power": fit.power, "valid as trained":
                     _pair(fit.trained), "valid fitted": _pair(fit.valid),
                     "test as trained": test["as trained"], "test fitted": test["fitted"]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path, nargs="+")
    parser.add_argument("--protocol", default="recbole",
                        choices=["recbole", "cold_start", "leave_last_out"])
    parser.add_argument("--betas", default=",".join(str(b) for b in BETAS),
                        help="beta0 values (default: the calibration's grid)")
    parser.add_argument("--scan", action="store_true",
                        help="validation Recall@10 + NDCG@10 of each beta0 alone")
    args = parser.parse_args()
    header("PinSage served bias weight, fitted on valid")
    betas = tuple(float(b) for b in args.betas.split(","))
    for path in args.artifacts:
        print(json.dumps(report(path, args.protocol, betas, args.scan)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
