"""Finding MovieLens on disk, or downloading the official GroupLens archive.

Lookup order for a data set named ``ml-1m`` or ``ml-100k``:

1. an explicit directory (``--data-dir``),
2. ``MOVIELENS_DIR``: the data set's own directory, a folder holding ``<name>/``,
   or a sibling of it (so ``MOVIELENS_DIR=../shared/data/ml-1m`` also finds ml-100k),
3. the download cache ``$MOVIEREC_HOME/data/<name>`` that :func:`fetch` fills.

MovieLens may not be redistributed: nothing here copies the files into the repository.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from movierec.data.movielens import MovieLens, parse_directory
from movierec.data.synthetic import from_name
from movierec.errors import DataError


@dataclass(frozen=True)
class DatasetSpec:
    """Where GroupLens publishes a data set and how to recognise its files."""

    name: str
    url: str
    md5: str
    marker: str


DATASETS: dict[str, DatasetSpec] = {
    "ml-1m": DatasetSpec("ml-1m", "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                         "c4d9eecfca2ab87c1945afe126590906", "ratings.dat"),
    "ml-100k": DatasetSpec("ml-100k", "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                           "0e33842e24a9c977be4e0107933c0723", "u.data"),
}


#: Data sets named ``catalog-<time>`` are snapshots of the running catalog (``movierec
#: snapshot``, what retraining reads) in ml-1m's layout, kept under ``cache_dir()``.
SNAPSHOT_PREFIX = "catalog-"


def spec(name: str) -> DatasetSpec:
    if name.startswith(SNAPSHOT_PREFIX):
        return DatasetSpec(name, "", "", "ratings.dat")
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}, "
                        f"{SNAPSHOT_PREFIX}<time> (snapshots)") from None


def home_dir() -> Path:
    """The project-local state directory (``MOVIEREC_HOME``, default ``./.movierec``)."""
    return Path(os.environ.get("MOVIEREC_HOME", ".movierec")).resolve()


def cache_dir() -> Path:
    return home_dir() / "data"


def _candidates(name: str, data_dir: Path | None) -> list[Path]:
    found: list[Path] = []
    if data_dir is not None:
        found += [data_dir, data_dir / name]
    env = os.environ.get("MOVIELENS_DIR")
    # A snapshot lives only under the cache: MOVIELENS_DIR may point straight at ml-1m's
    # files, which share a snapshot's layout and would be taken for it.
    if env and not name.startswith(SNAPSHOT_PREFIX):
        base = Path(env)
        found += [base, base / name, base.parent / name]
    found.append(cache_dir() / name)
    return found


def locate(name: str, data_dir: Path | None = None) -> Path | None:
    """The first candidate directory that holds ``name``'s files, or None."""
    marker = spec(name).marker
    for candidate in _candidates(name, data_dir):
        if (candidate / marker).is_file():
            return candidate.resolve()
    return None


def md5sum(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - GroupLens publishes md5 checksums
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, target: Path, progress: bool) -> None:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - fixed https URL
        total = int(response.headers.get("Content-Length") or 0) or None
        with target.open("wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                            desc=target.name, disable=not progress) as bar:
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
                bar.update(len(block))


def fetch(name: str, dest: Path | None = None, *, url: str | None = None,
          md5: str | None = None, progress: bool = True) -> Path:
    """Download and verify ``name``'s archive, unpack it under ``dest``; return its folder."""
    info = spec(name)
    dest = (dest or cache_dir()).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        archive = Path(tmp) / f"{name}.zip"
        try:
            _download(url or info.url, archive, progress)
        except OSError as exc:
            raise DataError(f"could not download {url or info.url}: {exc}") from exc
        actual = md5sum(archive)
        if actual != (md5 or info.md5):
            raise DataError(f"checksum mismatch for {name}.zip: md5 {actual}, "
                            f"expected {md5 or info.md5}")
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(tmp)
        unpacked = Path(tmp) / name
        if not (unpacked / info.marker).is_file():
            raise DataError(f"{name}.zip does not contain {name}/{info.marker}")
        shutil.rmtree(dest / name, ignore_errors=True)
        unpacked.rename(dest / name)
    return dest / name


def load_dataset(name: str, data_dir: Path | None = None, *, download: bool = False,
                 progress: bool = True) -> MovieLens:
    """Parse a data set: ``ml-1m``/``ml-100k`` from disk (or downloaded), or ``synthetic``."""
    if name.startswith("synthetic"):
        return from_name(name)
    directory = locate(name, data_dir)
    if directory is None:
        if not download:
            raise DataError(f"{name} not found; set MOVIELENS_DIR or run "
                            f"`movierec data fetch --dataset {name}`")
        directory = fetch(name, progress=progress)
    return parse_directory(directory, name)
