"""Shared fixtures: MovieLens locations and real stores from the local runtime.

Data: ``../shared/data`` (the team's MovieLens copies) when it exists, else a
synthetic data set written in ml-1m's format. Stores: the URL in ``DATABASE_URL``,
``REDIS_URL`` or ``MILVUS_URI`` if set, else a real local server started once per
test session (never a mock). Milvus comes in two kinds, both started at most once:
``milvus_any`` runs a test against milvus-lite and against a Milvus 2.3 server.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from movierec.data.synthetic import generate, write_ml1m
from movierec.stack.local_milvus_server import isolation_error
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


def _store(request: pytest.FixtureRequest, root: Path, name: str,
           environ: dict[str, str] | None = None) -> str:
    stores = LocalStores(root=root / name, durable=False, want=(name.split("-")[0],),
                         environ={**os.environ, **(environ or {})})
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
def milvus_lite_uri(request: pytest.FixtureRequest, runtime_root: Path) -> str:
    """A milvus-lite server, always local (MILVUS_URI names a server, not Lite)."""
    return _store(request, runtime_root, "milvus-lite", {"MILVUS_MODE": "lite",
                                                          "MILVUS_URI": ""})


@pytest.fixture(scope="session")
def milvus_server_uri(request: pytest.FixtureRequest, runtime_root: Path) -> str:
    """``MILVUS_URI`` if set, else a local Milvus 2.3 standalone server (started once)."""
    problem = None if os.environ.get("MILVUS_URI") else isolation_error()
    if problem:
        pytest.skip(f"no private network namespace for a local Milvus server: {problem}")
    return _store(request, runtime_root, "milvus-server", {"MILVUS_MODE": "server"})


@pytest.fixture(scope="session", params=["lite", "server"])
def milvus_any(request: pytest.FixtureRequest) -> str:
    """Each Milvus the retriever supports, in turn: milvus-lite, then a Milvus server."""
    return request.getfixturevalue(f"milvus_{request.param}_uri")


@pytest.fixture(scope="session")
def milvus_uri(request: pytest.FixtureRequest) -> str:
    """The Milvus of the default mode (``MILVUS_MODE``, server unless set to lite)."""
    mode = "lite" if os.environ.get("MILVUS_MODE") == "lite" else "server"
    return request.getfixturevalue(f"milvus_{mode}_uri")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, database_url: str, milvus_uri: str):
    """The four services on synthetic models over real stores, started once per session."""
    from stack_fixture import running_stack

    with running_stack(tmp_path_factory.mktemp("stack"), database_url, milvus_uri) as running:
        yield running
