"""``movierec retrain`` and ``movierec rollback``: a new model version, validated, then
promoted without downtime (or refused), and the way back.

``retrain``:

1. snapshot the catalog (:mod:`movierec.services.catalog.snapshot`, one transaction);
2. train both models on it (split ``time_80_10_10``) into a staging root, not the
   serving one, so nothing serves them yet;
3. score challenger and champion (the serving ``LATEST``) as served on the snapshot's
   temporal holdout, on the ratings newer than the champion's training data
   (:mod:`movierec.evaluation.promotion`); refuse with exit code 3 and the reason when
   the challenger is worse beyond ``--tolerance``, or when too few users rated anything
   new to compare (unless ``--allow-unjudged``);
4. promote each model: its vectors are published to Milvus as a new collection and the
   live pointer swapped atomically (the previous collection is kept: queries made with
   the previous version are still answered while the embedders switch, and a rollback
   is instant); then the artifact is copied into the serving root and ``LATEST`` moved
   (the previous version is recorded in ``PREVIOUS``); embedders load it within
   ``EMBEDDER_RELOAD_SECONDS`` (or at once on SIGHUP). Cached answers are keyed by the
   model versions the embedder reports, so none computed by the old version is served
   for the new one.

``rollback`` points ``LATEST`` and the live collection of each model back to
``PREVIOUS`` (both still there), and records the version it left as the new
``PREVIOUS``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from movierec import settings
from movierec.data.source import home_dir, load_dataset
from movierec.errors import DataError, FailedPrecondition, MovierecError
from movierec.evaluation.promotion import MIN_USERS, compare
from movierec.models import registry
from movierec.models.artifact import artifacts_root, latest, read_metadata, write_pointer
from movierec.services.retriever.loader import items_from_artifact, publish
from movierec.services.retriever.milvus import MilvusVectors
from movierec.services.retriever.server import RetrieverSettings
from movierec.stack.jobs import take_snapshot
from movierec.stack.stores import LocalStores

SPLIT = "time_80_10_10"
REFUSED = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="movierec retrain", description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="the serving artifacts root (default: MOVIEREC_ARTIFACTS)")
    parser.add_argument("--tolerance", type=float, default=0.005,
                        help="largest drop of NDCG@10 on a judged path that still promotes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-args", default="",
                        help="extra flags for both trainings (e.g. '--max-epochs 3')")
    parser.add_argument("--min-users", type=int, default=MIN_USERS,
                        help="users with ratings newer than the serving models' data "
                             "needed to compare them")
    parser.add_argument("--allow-unjudged", action="store_true",
                        help="promote when too few users rated anything after the serving "
                             "models' data to compare them (a catalog just bootstrapped "
                             "from the files they learned)")
    parser.add_argument("--challenger", type=Path, default=None,
                        help="an artifacts root holding ready challengers: skip training")
    parser.add_argument("--dataset", default=None,
                        help="judge on this data set instead of a fresh catalog snapshot")
    return parser


def train_challengers(dataset: str, staging: Path, threads: int, extra: str) -> None:
    for model in registry.NAMES:
        print(f"==> training the {model} challenger on {dataset}", flush=True)
        subprocess.run([sys.executable, "-m", "movierec.cli", "train", model, "--dataset",
                        dataset, "--split", SPLIT, "--artifacts", str(staging), "--threads",
                        str(threads), "--no-progress", *extra.split()], check=True)


def champions(root: Path) -> dict[str, Path] | None:
    """The serving artifacts of every model, None when any is missing (a first run)."""
    try:
        return {m: latest(m, root) for m in registry.NAMES}
    except DataError:
        return None


def promote(store: MilvusVectors, challenger: Path, root: Path) -> str:
    """Publish one model's vectors (the swap), then make its artifact the serving one."""
    meta = read_metadata(challenger)
    model, version = meta["model"], meta["version"]
    index = settings.load(RetrieverSettings).index_spec()
    live = publish(store, model, version, items_from_artifact(challenger, None, None),
                   index, drain_seconds=1.0, progress=False)
    target = root / model / version
    if not target.exists():
        staging = Path(tempfile.mkdtemp(prefix=f".promote-{version}-", dir=root / model))
        shutil.copytree(challenger, staging, dirs_exist_ok=True)
        staging.rename(target)
    previous = (root / model / "LATEST").read_text().strip() if (root / model / "LATEST") \
        .is_file() else ""
    if previous and previous != version:
        write_pointer(root / model / "PREVIOUS", previous)
    write_pointer(root / model / "LATEST", version)
    return f"{model} {version} (collection {live.collection})"


def retrain(args: argparse.Namespace, milvus_uri: str) -> int:
    root = artifacts_root(args.artifacts)
    clock = Laps()
    dataset = args.dataset or take_snapshot().name
    clock.lap("snapshot")
    staging = args.challenger or home_dir() / "challengers" / dataset
    if args.challenger is None:
        train_challengers(dataset, staging, args.threads, args.train_args)
    clock.lap("train")
    challenger = {m: latest(m, staging) for m in registry.NAMES}
    seed = int(read_metadata(challenger["pinsage"]).get("split_seed", 2026))
    verdict = compare(load_dataset(dataset), champions(root), challenger, seed, args.tolerance,
                      args.min_users)
    clock.lap("validate")
    print(verdict.table(), flush=True)
    if verdict.unjudged is not None and args.allow_unjudged:
        print(f"promoting unjudged ({'; '.join(verdict.refused)}): --allow-unjudged")
    elif not verdict.promote:
        print("refused: " + "; ".join(verdict.refused) + " (the serving models stay)")
        print(clock, flush=True)
        return REFUSED
    store = MilvusVectors(milvus_uri, timeout=60)
    try:
        for model in registry.NAMES:
            print(f"==> promoted {promote(store, challenger[model], root)}", flush=True)
    finally:
        store.close()
    clock.lap("promote")
    print(clock, flush=True)
    return 0


class Laps:
    """Seconds each step took, printed as one line."""

    def __init__(self) -> None:
        self.last, self.laps = time.perf_counter(), {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name], self.last = round(now - self.last, 1), now

    def __str__(self) -> str:
        return "seconds: " + ", ".join(f"{k} {v}" for k, v in self.laps.items())


def retrain_main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stores = LocalStores(want=("postgres", "milvus"))
    try:
        return retrain(args, stores.start()["MILVUS_URI"])
    except (MovierecError, subprocess.CalledProcessError) as exc:
        print(f"movierec retrain: {exc}", file=sys.stderr)
        return 1
    finally:
        stores.stop()


def rollback(root: Path, store: MilvusVectors, model: str) -> str:
    """Make ``model``'s previous version serve again (artifact and collection)."""
    pointer = root / model / "PREVIOUS"
    if not pointer.is_file():
        raise FailedPrecondition(f"{model}: no previous version recorded in {pointer}")
    previous, current = pointer.read_text().strip(), (root / model / "LATEST").read_text().strip()
    kept = [c for c in store.collections_of(model) if c.version == previous]
    if not kept or not (root / model / previous).is_dir():
        raise FailedPrecondition(f"{model}: version {previous} is no longer kept")
    store.publish(kept[0])
    write_pointer(root / model / "LATEST", previous)
    write_pointer(pointer, current)
    return f"{model}: {current} -> {previous}"


def rollback_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="movierec rollback",
                                     description="serve each model's previous version again")
    parser.add_argument("--artifacts", type=Path, default=None)
    parser.add_argument("--model", choices=registry.NAMES, action="append")
    args = parser.parse_args(argv)
    stores = LocalStores(want=("milvus",))
    try:
        store = MilvusVectors(stores.start()["MILVUS_URI"], timeout=60)
        for model in args.model or registry.NAMES:
            print(rollback(artifacts_root(args.artifacts), store, model))
        store.close()
    except MovierecError as exc:
        print(f"movierec rollback: {exc}", file=sys.stderr)
        return 1
    finally:
        stores.stop()
    return 0
