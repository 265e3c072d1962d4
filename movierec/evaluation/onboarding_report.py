"""The onboarding evaluation's summary (mean and spread over draws), table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROWS = ("combined", "combined_tuned", "profile", "liked", "ease", "grouppop", "mostpop")
LABELS = {"combined": "profile + likes (served)", "combined_tuned": "profile + likes (w tuned)",
          "profile": "profile (fusion)", "liked": "liked (PinSage)",
          "ease": "EASE (folded in)", "grouppop": "GroupPop", "mostpop": "MostPop"}
METRICS = ("ndcg@10", "recall@10")
#: the rows the combination must beat ("single source")
SINGLE = ("profile", "liked", "ease", "grouppop", "mostpop")


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": round(float(np.mean(values)), 5), "std": round(float(np.std(values)), 5)}


def summarize(draws: list[dict]) -> dict:
    """Per row and k: test metrics (mean, std over draws), validation NDCG@10, chosen
    parameters; per k: the held-out nDCG@3 of each row; the combination's margin over
    the best single-source row (relative NDCG@10)."""
    ks = list(draws[0]["rows"])
    rows: dict[str, dict] = {}
    for name in ROWS:
        for k in ks:
            found = [d["rows"][k][name] for d in draws if name in d["rows"][k]]
            if not found:
                continue
            entry = {m: _stats([f[m] for f in found]) for m in METRICS}
            entry["valid_ndcg@10"] = _stats([f["valid"]["ndcg@10"] for f in found])
            params = [{p: v for p, v in f.get("params", {}).items() if p != "grid"}
                      for f in found]
            if any(params):
                entry["params"] = params
            rows.setdefault(name, {})[k] = entry
    margins = {}
    for k in ks:
        singles = {n: rows[n][k]["ndcg@10"]["mean"] for n in SINGLE if k in rows.get(n, {})}
        best = max(singles, key=singles.get)
        margins[k] = {"best_single": best,
                      "ndcg_gain": round(rows["combined"][k]["ndcg@10"]["mean"]
                                         / singles[best] - 1.0, 4),
                      "recall_at_least_every_single": all(
                          rows["combined"][k]["recall@10"]["mean"]
                          >= rows[n][k]["recall@10"]["mean"] for n in singles)}
    held = {k: {n: _stats([d["held_out_ndcg@3"][k][n] for d in draws
                           if n in d["held_out_ndcg@3"].get(k, {})])
                for n in ("combined", "profile", "liked", "mostpop")
                if any(n in d["held_out_ndcg@3"].get(k, {}) for d in draws)}
            for k in ks}
    rules = rule_scores(draws)
    return {"rows": rows, "margins": margins, "held_out_ndcg@3": held,
            "rules": rules, "chosen_rule": max(rules, key=rules.get) if rules else None,
            "chosen_weights": {k: _constant(draws, k) for k in ks if k != "0"}}


def rule_scores(draws: list[dict]) -> dict[str, float]:
    """Each weight rule's validation NDCG@10, averaged over k >= 1 and draws (the served
    :data:`movierec.models.onboarding.RULE` should be the best)."""
    grids = [d["rows"][k]["rules"] for d in draws for k in d["rows"] if "rules" in d["rows"][k]]
    if not grids:
        return {}
    return {rule: round(float(np.mean([g[rule] for g in grids])), 5) for rule in grids[0]}


def _constant(draws: list[dict], k: str) -> float | None:
    """The constant weight with the best validation NDCG@10 at ``k``, over draws."""
    grids = [d["rows"][k]["combined_tuned"]["params"]["grid"] for d in draws
             if "combined_tuned" in d["rows"][k]]
    if not grids:
        return None
    mean = {w: float(np.mean([g[w] for g in grids])) for w in grids[0]}
    return float(max(mean, key=lambda w: (mean[w], -float(w))))


def markdown(result: dict) -> str:
    """NDCG@10 and Recall@10 (test, mean ± std over draws) per row and k."""
    summary = result["summary"]
    ks = list(summary["margins"])
    lines = [f"{result['dataset']} split={result['split']} seed={result['split_seed']} "
             f"draws={len(result['draws'])} test users={result['users']['test']}", "",
             "| row | " + " | ".join(f"k={k}" for k in ks) + " |",
             "|---|" + "---:|" * len(ks)]
    for metric in METRICS:
        lines.append(f"| **{metric} (test)** |" + " |" * len(ks))
        for name in ROWS:
            if name not in summary["rows"]:
                continue
            cells = [summary["rows"][name].get(k) for k in ks]
            lines.append(f"| {LABELS[name]} | " + " | ".join(
                f"{c[metric]['mean']:.4f} ± {c[metric]['std']:.4f}" if c else "–"
                for c in cells) + " |")
    lines.append("| combined vs best single, NDCG@10 | " + " | ".join(
        f"{summary['margins'][k]['ndcg_gain']:+.1%} ({summary['margins'][k]['best_single']})"
        for k in ks) + " |")
    lines.append("| served w(k) / constant w chosen at k | " + " | ".join(
        f"{result['weights_served'].get(k, '–')} / {summary['chosen_weights'].get(k, '–')}"
        for k in ks) + " |")
    lines.append("| **held-out nDCG@3 (stars as gains)** |" + " |" * len(ks))
    for name in ("combined", "profile", "liked", "mostpop"):
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(
            f"{summary['held_out_ndcg@3'][k][name]['mean']:.4f}"
            if name in summary["held_out_ndcg@3"][k] else "–" for k in ks) + " |")
    lines += ["", f"Served rule (c, p) = {tuple(result['rule_served'])}; chosen on validation: "
              f"{summary['chosen_rule']} (mean validation NDCG@10 "
              f"{summary['rules'].get(summary['chosen_rule'], 0):.4f})"]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """NDCG@10 (test) against k for every row, with the spread over draws."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name in ROWS:
        per_k = result["summary"]["rows"].get(name, {})
        ks = [int(k) for k in per_k]
        if not ks or name == "combined_tuned":
            continue
        mean = [per_k[str(k)]["ndcg@10"]["mean"] for k in ks]
        std = [per_k[str(k)]["ndcg@10"]["std"] for k in ks]
        ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3, label=LABELS[name],
                    linewidth=2.5 if name == "combined" else 1.2)
    ax.set_xlabel("liked movies given (k)")
    ax.set_ylabel("NDCG@10 (test)")
    ax.set_title(f"{result['dataset']}: onboarding, user cold start", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "onboarding.json", out / "onboarding.md", out / "onboarding.png"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    paths[1].write_text(markdown(result) + "\n")
    plot(result, paths[2])
    return paths
