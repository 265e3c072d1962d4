"""One evaluation's table as text, Markdown, JSON and a Recall@10 bar plot (PNG)."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = (("recall@10", "Recall@10"), ("ndcg@10", "NDCG@10"), ("hit@10", "Hit@10"),
           ("coverage@10", "Coverage@10"), ("popularity@10", "Pop. pct@10"))
#: the baselines each served path is plotted beside
PATH_BASELINES = {"profile": ("mostpop", "grouppop"), "profile_user": ("mostpop", "grouppop"),
                  "liked": ("mostpop", "itemknn", "ease"),
                  "user_id": ("mostpop", "itemknn", "ease"),
                  "next": ("mostpop", "itemknn", "ease")}
LABELS = {"profile": "profile", "profile_user": "profile + user id", "liked": "liked ids",
          "user_id": "user id (history)", "next": "next for user id", "pinsage": "PinSage",
          "mostpop": "MostPop",
          "grouppop": "GroupPop", "itemknn": "ItemKNN", "ease": "EASE", "bpr": "BPR",
          "recentpop": "RecentPop", "sasrec": "SASRec"}


def _params(row: dict) -> str:
    params = {k: v for k, v in row.get("params", {}).items() if k != "grid"}
    return ", ".join(f"{k}={v:g}" for k, v in params.items())


def _cell(key: str, value: float) -> str:
    """Popularity percentiles with one decimal, rates with four."""
    return f"{value:.1f}" if key.startswith("popularity") else f"{value:.4f}"


def _valid(row: dict) -> str:
    """Validation Recall@10, or a dash for a model that trained on the validation ratings
    (a refit has no validation)."""
    value = row["valid"].get("recall@10")
    return "–" if value is None else f"{value:.4f}"


def text_table(report: dict) -> str:
    """Fixed-width table of the test metrics (validation Recall@10 beside them)."""
    head = (f"{report['dataset']} protocol={report['protocol']} split={report['split']} "
            f"seed={report['split_seed']} test users={report['users']['test']}")
    lines = [head, f"{'row':<20}" + "".join(f"{t:>13}" for _, t in COLUMNS)
             + f"{'valid R@10':>12}  params"]
    cold = any("cold" in row for row in report["rows"].values())
    if cold:
        lines[1] += "  cold R@10 / NDCG@10 (users unseen in training)"
    for name, row in report["rows"].items():
        cells = "".join(f"{_cell(k, row[k]):>13}" for k, _ in COLUMNS)
        line = f"{LABELS.get(name, name):<20}{cells}{_valid(row):>12}  {_params(row)}"
        if cold and "cold" in row:
            line += f"  cold {row['cold']['recall@10']:.4f} / {row['cold']['ndcg@10']:.4f}"
        lines.append(line)
    return "\n".join(lines)


def markdown_table(report: dict) -> str:
    titles = [t for _, t in COLUMNS]
    lines = ["| row | " + " | ".join(titles) + " | valid Recall@10 | tuned on valid |",
             "|---|" + "---:|" * (len(titles) + 1) + "---|"]
    for name, row in report["rows"].items():
        cells = " | ".join(_cell(k, row[k]) for k, _ in COLUMNS)
        lines.append(f"| {LABELS.get(name, name)} | {cells} | {_valid(row)} | {_params(row)} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """Grouped bars: each served path's Recall@10 beside its baselines' (test)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    groups = [p for p in PATH_BASELINES if p in rows]
    fig, ax = plt.subplots(figsize=(3.4 + 1.9 * len(groups), 3.6))
    colors = {"mostpop": "#bbbbbb", "grouppop": "#888888", "itemknn": "#8fb3d9",
              "ease": "#3c6e9f"}
    for g, name in enumerate(groups):
        bars = [name, *[b for b in PATH_BASELINES[name] if b in rows]]
        for j, bar in enumerate(bars):
            x = g + (j - (len(bars) - 1) / 2) * 0.2
            ax.bar(x, rows[bar]["recall@10"], 0.18, color=colors.get(bar, "#d9534f"),
                   label=LABELS[bar] if bar in colors else "served path")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    ax.set_xticks(range(len(groups)), [LABELS[g] for g in groups], fontsize=9)
    ax.set_ylabel("Recall@10 (test)")
    ax.set_title(f"{report['dataset']}, protocol {report['protocol']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict, out: Path, stem: str) -> list[Path]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.json", out / f"{stem}.md", out / f"{stem}.png"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown_table(report) + "\n")
    plot(report, paths[2])
    return paths
