"""``movierec load catalog|vectors``, ``movierec snapshot`` and ``movierec train
--from-catalog``: the jobs between the stores and the models.

The loading itself lives in the services (:mod:`movierec.services.catalog.loader`,
:mod:`movierec.services.retriever.loader`); these commands add what only the local
runtime knows: a store the environment does not name is started for the job and
stopped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pymilvus import MilvusException

from movierec import settings
from movierec.data.source import load_dataset
from movierec.data.splits import DEFAULT_SEED, SPLITS
from movierec.errors import MovierecError
from movierec.models import cli as model_cli
from movierec.models.artifact import latest, read_metadata
from movierec.services.catalog import loader as catalog_loader
from movierec.services.catalog import snapshot as catalog_snapshot
from movierec.services.retriever import loader as vector_loader
from movierec.services.retriever.milvus import MilvusVectors
from movierec.services.retriever.records import INDEX_TYPES
from movierec.services.retriever.server import RetrieverSettings
from movierec.stack.stores import LocalStores


def _catalog_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="movierec load catalog",
                                     description=catalog_loader.__doc__)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--split", default=catalog_loader.DEFAULT_SPLIT,
                        choices=[*SPLITS, "all"])
    parser.add_argument("--part", default=catalog_loader.DEFAULT_PART,
                        choices=("train", "valid", "test"))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def load_catalog_main(argv: Sequence[str] | None = None) -> int:
    args = _catalog_parser().parse_args(argv)
    stores = LocalStores(want=("postgres",))
    try:
        url = stores.start()["DATABASE_URL"]
        data = load_dataset(args.dataset, args.data_dir)
        ratings = catalog_loader.select_ratings(data, args.split, args.part, args.seed)
        start = time.perf_counter()
        counts = asyncio.run(catalog_loader.load(url, data, ratings, progress=not args.quiet))
    except MovierecError as exc:
        print(f"movierec load catalog: {exc}")
        return 1
    finally:
        stores.stop()
    print(f"loaded {data.name} in {time.perf_counter() - start:.1f}s: "
          + ", ".join(f"{n:,} {t}" for t, n in counts.items()))
    return 0


def _vectors_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="movierec load vectors",
                                     description=vector_loader.__doc__)
    parser.add_argument("--model", required=True, help="fusion or pinsage")
    parser.add_argument("--artifact", type=Path, help="version directory (default: latest)")
    parser.add_argument("--artifacts", type=Path, help="artifacts root")
    parser.add_argument("--dataset", help="data set for movie years/genres (default: the "
                        "artifact's)")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--index", choices=INDEX_TYPES,
                        help="default: RETRIEVER_INDEX (HNSW; Milvus Lite falls back to FLAT)")
    parser.add_argument("--drain-seconds", type=float, default=5.0,
                        help="wait before dropping the previous version")
    parser.add_argument("--force", action="store_true",
                        help="replace the live version even when it is newer")
    parser.add_argument("--quiet", action="store_true")
    return parser


def load_vectors_main(argv: Sequence[str] | None = None) -> int:
    args = _vectors_parser().parse_args(argv)
    stores = LocalStores(want=("milvus",))
    try:
        index = settings.load(RetrieverSettings).index_spec()
        if args.index:
            index = replace(index, kind=args.index)
        path = args.artifact or latest(args.model, args.artifacts)
        version = read_metadata(path)["version"]
        items = vector_loader.items_from_artifact(path, args.dataset, args.data_dir)
        store = MilvusVectors(stores.start()["MILVUS_URI"])
        timings: dict[str, float] = {}
        live = vector_loader.publish(store, args.model, version, items, index,
                                     args.drain_seconds, not args.quiet, args.force, timings)
        store.close()
    except (MovierecError, MilvusException) as exc:
        print(f"movierec load vectors: {exc}")
        return 1
    finally:
        stores.stop()
    print(f"{live.model} {live.version}: {live.count:,} vectors (dim {live.dim}, "
          f"{live.index_type}/IP) live in {live.collection}; seconds: "
          + ", ".join(f"{step[:-2]} {took}" for step, took in timings.items()))
    return 0


def take_snapshot() -> catalog_snapshot.Snapshot:
    """A snapshot of the catalog ``DATABASE_URL`` names (or the local one)."""
    stores = LocalStores(want=("postgres",))
    try:
        return asyncio.run(catalog_snapshot.export(stores.start()["DATABASE_URL"]))
    finally:
        stores.stop()


def snapshot_main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(prog="movierec snapshot",
                            description=catalog_snapshot.__doc__).parse_args(argv)
    try:
        taken = take_snapshot()
    except (MovierecError, OSError) as exc:
        print(f"movierec snapshot: {exc}")
        return 1
    print(f"{taken.name}: " + ", ".join(f"{n:,} {t}" for t, n in taken.counts.items())
          + f" (catalog version {taken.catalog_version}) in {taken.path}")
    return 0


def train_main(argv: Sequence[str]) -> int:
    """``movierec train MODEL [...]``; with ``--from-catalog`` the model learns from a
    snapshot of the catalog taken now (``--dataset catalog-<time>``) instead of files."""
    argv = list(argv)
    if "--from-catalog" in argv:
        argv.remove("--from-catalog")
        taken = take_snapshot()
        print(f"training on {taken.name}: " + ", ".join(
            f"{n:,} {t}" for t, n in taken.counts.items()), flush=True)
        argv += ["--dataset", taken.name]
    return model_cli.train_main(argv)
