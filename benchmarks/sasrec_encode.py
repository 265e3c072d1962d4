"""CPU the embedder spends encoding a known user's history with SASRec (issue 32: a
200-movie history in at most 2 ms).

Times :meth:`SasRecEncoder.embed_history` (what ``EmbedHistory`` runs: numpy, one
thread) on histories of ``--lengths`` movies drawn from the artifact's items, as this
process's ``time.process_time`` per call (median of ``--repeat`` rounds of ``--calls``
calls each), and the same through :func:`embed_user_history` with the embedder's
history selection.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sasrec_encode.py \\
        --artifact .movierec/eval/artifacts-leave_last_out/sasrec/<version>
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header  # noqa: E402
from movierec.models.sasrec.encoder import SasRecEncoder  # noqa: E402
from movierec.models.user_input import History, embed_user_history  # noqa: E402


def cpu_ms(call, calls: int, repeat: int) -> float:
    """Median over ``repeat`` rounds of the process CPU milliseconds per call."""
    rounds = []
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(calls):
            call()
        rounds.append((time.process_time() - start) / calls * 1000)
    return float(np.median(rounds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=None,
                        help="a sasrec version directory (default: the latest)")
    parser.add_argument("--lengths", default="10,50,200,1000")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    header("SASRec history encoding, CPU per call")
    encoder = SasRecEncoder.load(args.artifact)
    rng = np.random.default_rng(0)
    rows = []
    for length in (int(n) for n in args.lengths.split(",")):
        ids = rng.choice(encoder.movie_ids, size=min(length, len(encoder.movie_ids)),
                         replace=False)
        history = History.of(ids, np.full(len(ids), 4.0), np.arange(len(ids))[::-1])
        newest_first, stars = ids.tolist(), [4.0] * len(ids)
        times = history.timestamps.tolist()
        direct = cpu_ms(lambda i=newest_first, r=stars, t=times: encoder.embed_history(i, r, t),
                        args.calls, args.repeat)
        served = cpu_ms(lambda h=history: embed_user_history(encoder, h, 5000), args.calls,
                        args.repeat)
        rows.append({"history": int(len(ids)), "encode_ms": round(direct, 3),
                     "embed_user_history_ms": round(served, 3)})
    result = {"artifact": str(args.artifact or "latest"), "dims": encoder.metadata.get("dims"),
              "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'history':>8} {'encode ms':>10} {'served ms':>10}")
        for row in rows:
            print(f"{row['history']:>8} {row['encode_ms']:>10.3f} "
                  f"{row['embed_user_history_ms']:>10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
