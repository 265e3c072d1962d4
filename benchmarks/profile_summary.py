"""Where a process's CPU goes, from py-spy's collapsed stacks (``--format raw``).

    .venv/bin/python benchmarks/profile_summary.py DIR [--top 12]

For every ``<tag>-<service>.txt`` in DIR: the share of samples per top-of-stack
function ("self" time) and per frame anywhere on the stack ("total"), the largest first.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def parse(path: Path) -> tuple[Counter, Counter, int]:
    """(self samples per frame, total samples per frame, all samples)."""
    own, total, count = Counter(), Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  + ")" if " (" in f else f for f in stack.split(";")]
        n = int(samples)
        count += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    return own, total, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    for path in sorted(args.folder.glob("*.txt")):
        own, total, count = parse(path)
        if not count:
            continue
        print(f"\n## {path.stem} ({count} samples)")
        print("self %  function")
        for frame, n in own.most_common(args.top):
            print(f"{100 * n / count:5.1f}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
