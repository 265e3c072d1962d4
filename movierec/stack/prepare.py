"""What ``movierec up`` does before it starts the services: data, models, stores.

Each step is skipped when its result is already there: MovieLens is located (or
downloaded), each model is trained with its default budget only when it has no
artifact, the catalog load is idempotent, and a model's vectors are published to
Milvus only when the live version differs from the newest artifact.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from movierec import settings
from movierec.data.source import load_dataset, locate
from movierec.errors import DataError, NotFound
from movierec.models import registry
from movierec.models.artifact import latest, read_metadata
from movierec.services.catalog import loader
from movierec.services.retriever.loader import items_from_artifact, publish
from movierec.services.retriever.milvus import MilvusVectors
from movierec.services.retriever.records import version_key
from movierec.services.retriever.server import RetrieverSettings
from movierec.stack.training import StepFailed, Training, failure

MODELS = registry.NAMES


def step(text: str) -> float:
    print(f"==> {text}", flush=True)
    return time.perf_counter()


def run_step(argv: list[str], failed: str) -> None:
    """Run ``movierec ARGV`` in its own process; StepFailed with ``failed`` (one line,
    after the command's own output) when it exits non-zero."""
    command = [sys.executable, "-m", "movierec.cli", *argv]
    try:
        subprocess.run(command, check=True)
    except subprocess.CalledProcessError as exc:
        raise StepFailed(failure(failed, argv, exc.returncode)) from None


def ensure_data(dataset: str) -> None:
    if dataset.startswith("synthetic") or locate(dataset) is not None:
        return
    start = step(f"downloading {dataset} (set MOVIELENS_DIR to use a local copy)")
    run_step(["data", "fetch", "--dataset", dataset],
             f"{dataset} is not available (set MOVIELENS_DIR to a local copy, or allow "
             "the download)")
    print(f"    done in {time.perf_counter() - start:.0f}s")


def ensure_models(dataset: str) -> Training:
    """Start training every model that has no artifact, side by side (one process and
    one thread each: the models train on both cores at once); what :meth:`Training.wait`
    finishes."""
    missing = []
    for model in MODELS:
        try:
            print(f"==> {model}: using artifact {latest(model).name}")
        except DataError:
            missing.append(model)
    commands = {m: ["train", m, "--dataset", dataset, *registry.get(m).first_run,
                    "--no-progress"] for m in missing}
    if commands:
        step(f"training {', '.join(missing)} on {dataset} side by side (first run only)")
    return Training(commands)


def load_catalog(database_url: str, dataset: str) -> None:
    start = step("loading the catalog into PostgreSQL")
    data = load_dataset(dataset)
    counts = asyncio.run(loader.load(database_url, data,
                                     loader.select_ratings(data),
                                     progress=False))
    print(f"    {counts} in {time.perf_counter() - start:.1f}s")


def load_vectors(milvus_uri: str, dataset: str, models: tuple[str, ...] = MODELS) -> None:
    """Publish each of ``models``' newest artifact unless it is live already. The embedder that
    ``up`` starts serves that artifact, so a newer live version is replaced (forced):
    the retriever must serve the embedder's version."""
    index = settings.load(RetrieverSettings).index_spec()
    store = MilvusVectors(milvus_uri, timeout=60)
    store.ready()
    for model in models:
        path = latest(model)
        version = read_metadata(path)["version"]
        try:
            live = store.resolve(model).version
        except NotFound:
            live = None
        if live == version:
            print(f"==> {model} vectors {version} already live in Milvus")
            continue
        if live is not None and version_key(live) > version_key(version):
            print(f"==> {model}: replacing the newer live vectors {live} with {version}, "
                  "the version the embedder serves")
        start = step(f"publishing {model} vectors {version} to Milvus")
        publish(store, model, version, items_from_artifact(path, dataset, None), index,
                drain_seconds=0, progress=False, force=True)
        print(f"    done in {time.perf_counter() - start:.1f}s")
    store.close()


def prepare(addresses: dict[str, str], dataset: str) -> None:
    """Data, then the models' training beside the catalog load, then the vectors."""
    ensure_data(dataset)
    with ensure_models(dataset) as training:
        load_catalog(addresses["DATABASE_URL"], dataset)
        training.wait()
    load_vectors(addresses["MILVUS_URI"], dataset)
