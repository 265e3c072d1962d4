"""docs/pinsage.png: Recall@10 (test) of PinSage and every baseline, one group per protocol,
from the JSON that ``movierec evaluate pinsage --json`` printed (``make eval`` writes
``pinsage-<protocol>.json`` under its report folder).

    .venv/bin/python benchmarks/pinsage_plot.py .movierec/eval/report [--out docs/pinsage.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from movierec.evaluation.report import LABELS  # noqa: E402

PROTOCOLS = ("recbole", "cold_start", "leave_last_out")
#: row key -> bar colour, in plotting order (labels: the evaluation report's)
MODELS = {"pinsage": "#d9534f", "ease": "#3c6e9f", "itemknn": "#8fb3d9", "bpr": "#5cb85c",
          "grouppop": "#888888", "mostpop": "#bbbbbb"}


def reports(folder: Path) -> dict[str, dict]:
    found = {p: folder / f"pinsage-{p}.json" for p in PROTOCOLS}
    return {p: json.loads(path.read_text())["rows"] for p, path in found.items()
            if path.exists()}


def plot(rows: dict[str, dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(3.3 * len(rows) + 1.2, 3.4))
    axes = axes if len(rows) > 1 else [axes]
    for ax, (protocol, table) in zip(axes, rows.items(), strict=True):
        present = [key for key in MODELS if key in table]
        ax.bar(range(len(present)), [table[key]["recall@10"] for key in present],
               color=[MODELS[key] for key in present])
        ax.set_xticks(range(len(present)), [LABELS[key] for key in present],
                      rotation=45, ha="right", fontsize=8)
        ax.set_title(protocol, fontsize=10)
    axes[0].set_ylabel("Recall@10 (test)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "pinsage.png")
    args = parser.parse_args()
    rows = reports(args.folder)
    if not rows:
        parser.error(f"no pinsage-<protocol>.json under {args.folder}")
    plot(rows, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
