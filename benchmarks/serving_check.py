"""Regression guard for serving speed (not a timed test): compare two benchmark runs.

Each scenario's throughput is taken relative to the echo server of the same run and
concurrency (so a busier or slower machine does not look like a regression), and every
ratio that dropped by more than ``--tolerance`` (20 % by default) against the committed
results is reported. Exit code 1 with ``--strict`` when something dropped, else 0.

    .venv/bin/python benchmarks/serving_bench.py --json-out /tmp/serving.json
    .venv/bin/python benchmarks/serving_check.py /tmp/serving.json [--baseline docs/serving.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ratios(report: dict) -> dict[tuple[str, int], float]:
    """(scenario, concurrency) -> requests/s as a share of the echo server's."""
    echo = {r["concurrency"]: r["rps"] for r in report["rows"] if r["scenario"] == "echo"}
    return {(r["scenario"], r["concurrency"]): r["rps"] / echo[r["concurrency"]]
            for r in report["rows"] if r["scenario"] != "echo" and echo.get(r["concurrency"])}


def compare(new: dict, old: dict, tolerance: float) -> list[str]:
    """One line per ratio that dropped by more than ``tolerance`` (a fraction)."""
    before, after = ratios(old), ratios(new)
    lines = []
    for key in sorted(before.keys() & after.keys()):
        if after[key] < before[key] * (1 - tolerance):
            scenario, c = key
            lines.append(f"{scenario} at {c} in flight: {after[key]:.1%} of echo, was "
                         f"{before[key]:.1%} ({after[key] / before[key] - 1:+.0%})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", type=Path)
    parser.add_argument("--baseline", type=Path, default=ROOT / "docs" / "serving.json")
    parser.add_argument("--tolerance", type=float, default=0.2)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args(argv)
    drops = compare(json.loads(args.new.read_text()), json.loads(args.baseline.read_text()),
                    args.tolerance)
    for line in drops:
        print(f"WARNING: {line}")
    if not drops:
        print(f"no ratio to echo dropped by more than {args.tolerance:.0%}")
    return 1 if drops and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
