"""``movierec trace waterfall``: one request's spans from a trace file, as a PNG and text.

Reads the JSON lines :mod:`movierec.tracing.jsonl` writes (``MOVIEREC_TRACE_FILE``),
picks one trace (``--trace-id``, else the newest of those that cross the most
services), orders its spans as a tree (each child under its parent, by start time)
and draws one bar per span on a shared time axis, coloured by service::

    movierec trace waterfall --file traces.jsonl --out waterfall.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Span = dict[str, Any]


def load(path: Path) -> list[Span]:
    """Every span in a trace file (lines that are not JSON objects are skipped)."""
    spans = []
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and "trace_id" in item:
            spans.append(item)
    return spans


def pick(spans: Sequence[Span], trace_id: str | None = None) -> list[Span]:
    """The spans of ``trace_id``, else of the newest trace crossing the most services."""
    traces: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        traces[span["trace_id"]].append(span)
    if trace_id is not None:
        return traces.get(trace_id.lower(), [])
    if not traces:
        return []
    best = max(traces.values(), key=lambda group: (len({s["service"] for s in group}),
                                                     max(s["start_ns"] for s in group)))
    return best


def tree_order(spans: Sequence[Span]) -> list[tuple[int, Span]]:
    """(depth, span) in depth-first order, children by start time; spans whose parent is
    not in the trace (the caller was not traced) are roots."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[Span]] = defaultdict(list)
    for span in spans:
        parent = span.get("parent_id")
        children[parent if parent in ids else None].append(span)
    out: list[tuple[int, Span]] = []

    def visit(parent: str | None, depth: int) -> None:
        for child in sorted(children[parent], key=lambda s: s["start_ns"]):
            out.append((depth, child))
            visit(child["span_id"], depth + 1)
    visit(None, 0)
    return out


def label(span: Span) -> str:
    """What a bar says: the service and the span's name; an RPC as ``Service/Method``
    (``calls`` on the caller's side), a SQL query by its statement's start."""
    name = span["name"]
    statement = span.get("attributes", {}).get("db.statement")
    if name.startswith("/") and name.count("/") == 2:
        name = name.rsplit(".", 1)[-1]
        if span["kind"] == "CLIENT":
            name = f"calls {name}"
    elif span.get("attributes", {}).get("db.system") == "redis":
        name = f"redis {name.split(' ')[0]}"
    elif statement and span["kind"] == "CLIENT" and len(name) < 12:
        name = "SQL " + " ".join(str(statement).split())[:40]
    return f"{span['service']}: {name}"


def text(rows: Sequence[tuple[int, Span]]) -> str:
    """The waterfall as text: start and duration (ms) from the trace's first span."""
    start = min(s["start_ns"] for _, s in rows)
    lines = [f"trace {rows[0][1]['trace_id']}", f"{'start ms':>9} {'ms':>8}  span"]
    for depth, span in rows:
        lines.append(f"{(span['start_ns'] - start) / 1e6:9.2f} "
                     f"{(span['end_ns'] - span['start_ns']) / 1e6:8.2f}  "
                     f"{'  ' * depth}{label(span)}")
    return "\n".join(lines)


def draw(rows: Sequence[tuple[int, Span]], out: Path, title: str = "") -> None:
    """A PNG with one horizontal bar per span (start, duration), coloured by service."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = min(s["start_ns"] for _, s in rows)
    services = list(dict.fromkeys(s["service"] for _, s in rows))
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(services)}
    fig, axes = plt.subplots(figsize=(11, 0.9 + 0.32 * len(rows)))
    for y, (_, span) in enumerate(rows):
        left = (span["start_ns"] - start) / 1e6
        width = max((span["end_ns"] - span["start_ns"]) / 1e6, 0.01)
        axes.barh(y, width, left=left, color=colours[span["service"]], height=0.7)
        axes.text(left + width, y, f" {width:.2f} ms", va="center", fontsize=7)
    axes.set_yticks(range(len(rows)),
                    [f"{'  ' * depth}{label(span)}" for depth, span in rows], fontsize=7)
    axes.invert_yaxis()
    axes.set_xlim(0, axes.get_xlim()[1] * 1.1)   # room for the last bar's duration
    axes.set_xlabel("ms since the request's first span")
    axes.set_title(title or f"trace {rows[0][1]['trace_id']}", fontsize=9)
    axes.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=colours[s]) for s in services],
                labels=services, fontsize=7, ncol=len(services), loc="upper center",
                bbox_to_anchor=(0.5, -0.6 / (0.32 * len(rows))))   # below the x label
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="movierec trace waterfall",
        description="One request's spans from a trace file, as a PNG and as text.")
    parser.add_argument("--file", type=Path, required=True, help="MOVIEREC_TRACE_FILE")
    parser.add_argument("--trace-id", help="32 hex digits (a log line's request_id)")
    parser.add_argument("--out", type=Path, default=Path("waterfall.png"), help="PNG")
    parser.add_argument("--title", default="", help="the picture's title")
    args = parser.parse_args(argv)
    rows = tree_order(pick(load(args.file), args.trace_id))
    if not rows:
        print(f"no spans of {args.trace_id or 'any trace'} in {args.file}")
        return 1
    print(text(rows))
    draw(rows, args.out, args.title)
    print(f"waterfall: {args.out}")
    return 0
