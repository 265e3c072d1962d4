"""Training at scale: both models on synthetic ratings of growing size, one process.

For each size (``--sizes``, ratings) it writes the synthetic set once (``movierec data
synth --ratings N``; kept under ``--work``), then trains each model with
``movierec train MODEL --max-epochs E`` in a child process and records, from the
artifact and the child's rusage: seconds per epoch (the training log's), epochs run
and the best epoch (``--epochs 0``: the model's own stopping rule, i.e. to
convergence), the whole command's wall time, the time outside the epochs (loading,
graph building, export), the child's peak RSS, and the validation metric. With
``--publish`` the artifact's vectors are then published to a local Milvus (real
stores, like ``make run``'s) and that is timed too. ``--nproc 2`` trains each model
with 2 ranks instead (``movierec train ... --nproc 2``) and records the bytes
all-reduced per step from the artifact. One JSON line per run; timings never gate
anything.

    .venv/bin/python benchmarks/scale_bench.py --sizes 1000000,5000000 --epochs 1 \\
        [--models fusion,pinsage] [--publish] [--nproc 2] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, header  # noqa: E402
from movierec.models.artifact import latest, read_metadata  # noqa: E402

MOVIEREC = [sys.executable, "-m", "movierec.cli"]


def child_run(argv: list[str], env: dict[str, str]) -> dict:
    """Run ``argv``; its wall seconds, exit code and peak RSS (MiB: the largest of the
    child and the descendants it waited for, as ``wait4`` reports; a maximum, not a sum)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss
    return {"wall_s": round(time.perf_counter() - start, 1), "rc": proc.returncode,
            "peak_rss_mib": round(peak / 1024)}


def synth(size: int, work: Path) -> tuple[Path, dict]:
    """The synthetic set of ``size`` ratings (written once)."""
    out = work / f"synth-{size}"
    if (out / "ratings.dat").exists():
        return out, {"reused": True}
    run = child_run([*MOVIEREC, "data", "synth", "--ratings", str(size), "--out", str(out)],
                    dict(os.environ))
    return out, run


def epoch_seconds(meta: dict, model: str) -> list[float]:
    """Seconds of each training epoch, from the artifact's training log."""
    log = (meta.get("training") or {}).get("log") or meta.get("history") or []
    cumulative = [row.get("seconds") for row in log if isinstance(row, dict)]
    per = [row.get("train_seconds", row.get("epoch_seconds")) for row in log
           if isinstance(row, dict)]
    if per and all(v is not None for v in per):
        return per
    values = [v for v in cumulative if v is not None]
    return [b - a for a, b in zip([0.0, *values], values, strict=False)]


def summary(meta: dict, model: str) -> dict:
    """What the artifact says of its training."""
    training = meta.get("training") or {}
    epochs = epoch_seconds(meta, model)
    return {"version": meta["version"], "epochs_run": training.get("epochs_run", len(epochs)),
            "best_epoch": training.get("best_epoch", meta.get("best_epoch")),
            "epoch_s": [round(s, 1) for s in epochs],
            "training_s": training.get("seconds", meta.get("training_seconds")),
            "artifact_wall_s": meta.get("wall_seconds"),
            "valid": meta.get("valid_metrics") or meta.get("metrics"),
            "rows_per_epoch": [row.get("rows") for row in meta.get("history") or []] or None,
            "distributed": training.get("distributed") or meta.get("distributed"),
            "gradient_bytes": (training.get("distributed") or {}).get(
                "gradient_bytes", meta.get("gradient_bytes")),
            "steps_per_epoch": (training.get("distributed") or {}).get("steps_per_epoch")}


def publish_seconds(model: str, data_dir: Path, artifacts: Path) -> float:
    """Seconds to publish the newest ``model`` artifact's vectors to a local Milvus."""
    from movierec.stack.prepare import load_vectors
    from movierec.stack.stores import LocalStores

    os.environ.update(MOVIELENS_DIR=str(data_dir), MOVIEREC_ARTIFACTS=str(artifacts))
    stores = LocalStores()
    try:
        uri = stores.start()["MILVUS_URI"]
        start = time.perf_counter()
        load_vectors(uri, "ml-1m", models=(model,))
        return round(time.perf_counter() - start, 1)
    finally:
        stores.stop()


def train(model: str, data_dir: Path, artifacts: Path, args: argparse.Namespace) -> dict:
    """One ``movierec train`` run on ``data_dir``, measured."""
    argv = [*MOVIEREC, "train", model, "--dataset", "ml-1m", "--data-dir", str(data_dir),
            "--artifacts", str(artifacts), "--no-progress"]
    if args.epochs:
        argv += ["--max-epochs", str(args.epochs)]
    if args.nproc > 1:
        argv += ["--nproc", str(args.nproc)]
    if model == "pinsage" and not args.calibrate:
        argv.append("--no-calibrate-bias")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOVIELENS_DIR": str(data_dir),
           "MOVIEREC_ARTIFACTS": str(artifacts)}
    run = child_run(argv, env)
    if run["rc"] != 0:
        return run
    os.environ["MOVIEREC_ARTIFACTS"] = str(artifacts)
    meta = read_metadata(latest(model))
    row = {**run, **summary(meta, model)}
    if row["epoch_s"]:
        row["outside_epochs_s"] = round(run["wall_s"] - sum(row["epoch_s"]), 1)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,5000000,25000000")
    parser.add_argument("--models", default="fusion,pinsage")
    parser.add_argument("--epochs", type=int, default=1,
                        help="epochs per run (0: the model's own stopping rule)")
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--publish", action="store_true", help="time a Milvus publish too")
    parser.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                        help="PinSage's bias calibration (63 full rankings of the "
                             "validation users per weight: hours at 25M)")
    parser.add_argument("--work", type=Path, default=ROOT / ".movierec" / "scale")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    header("training at scale")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        data_dir, made = synth(size, args.work)
        print(json.dumps({"size": size, "synth": made}), flush=True)
        for model in args.models.split(","):
            artifacts = args.work / f"artifacts-{size}-n{args.nproc}"
            row = {"size": size, "model": model, "nproc": args.nproc, "epochs_asked": args.epochs,
                   **train(model, data_dir, artifacts, args)}
            if args.publish and row.get("rc") == 0:
                row["publish_s"] = publish_seconds(model, data_dir, artifacts)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
