"""Shared fixtures: MovieLens locations and real stores from the local runtime.

Data: ``../shared/data`` (the team's MovieLens copies) when it exists, else a
synthetic data set written in ml-1m's format. Stores: the URL in ``DATABASE_URL``,
``REDIS_URL`` or ``MILVUS_URI`` if set, else a real local server started once per
test session (never a mock).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from movierec.data.synthetic import generate, write_ml1m
from movierec.stack.stores import LocalStores

ROOT = Path(__file__).resolve().parent.parent
SHARED = (ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path | None:
    """The shared MovieLens folder, or None when this checkout has none."""
    return SHARED if (SHARED / "ml-100k" / "u.data").is_file() else None


@pytest.fixture(scope="session")
def ml100k_dir(shared_data: Path | None) -> Path:
    if shared_data is None:
        pytest.skip("../shared/data/ml-100k not present")
    return shared_data / "ml-100k"


@pytest.fixture(scope="session")
def small_ml_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path | None) -> Path:
    """A small ml-1m-format directory: ml-100k is not ml-1m-format, so synthetic."""
    directory = tmp_path_factory.mktemp("synthetic") / "ml-1m"
    return write_ml1m(generate(200, 300, 30, seed=7), directory)


@pytest.fixture(scope="session")
def runtime_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime")


def _store(request: pytest.FixtureRequest, root: Path, name: str) -> str:
    stores = LocalStores(root=root / name, durable=False, want=(name,), environ=dict(os.environ))
    addresses = stores.start()
    request.addfinalizer(stores.stop)
    return next(iter(addresses.values()))


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest, runtime_root: Path) -> str:
    return _store(request, runtime_root, "postgres")


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest, runtime_root: Path) -> str:
    return _store(request, runtime_root, "redis")


@pytest.fixture(scope="session")
def milvus_uri(request: pytest.FixtureRequest, runtime_root: Path) -> str:
    return _store(request, runtime_root, "milvus")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, database_url: str, milvus_uri: str):
    """The four services on synthetic models over real stores, started once per session."""
    from stack_fixture import running_stack

    with running_stack(tmp_path_factory.mktemp("stack"), database_url, milvus_uri) as running:
        yield running
