"""Finding an evaluation's artifacts and refusing ones trained on other data or splits."""

from __future__ import annotations

from pathlib import Path

from movierec.data.movielens import MovieLens
from movierec.errors import DataError
from movierec.models.artifact import latest, read_metadata


def resolve(path: Path | None, model: str, root: Path | None = None) -> Path:
    """A version directory from ``path``: the directory itself when it holds
    ``metadata.json``, else the latest ``model`` version under it (a model directory or
    an artifacts root); without ``path``, the latest under ``root``."""
    if path is None:
        return latest(model, root)
    path = Path(path)
    if (path / "metadata.json").is_file():
        return path
    if (path / "LATEST").is_file():
        return latest(path.name, path.parent)
    return latest(model, path)


def check(path: Path, data: MovieLens, split: str, train_flag: str) -> dict:
    """The artifact's metadata, if it was trained on ``split`` of these very files."""
    meta = read_metadata(path)
    if meta.get("split") != split:
        raise DataError(f"{path} was trained on split {meta.get('split')}; this evaluation "
                        f"needs one trained on {split} ({train_flag} --split {split})")
    if meta.get("data_checksum") != data.checksum:
        raise DataError(f"{path} was trained on {meta.get('dataset')}, not on these "
                        f"{data.name} files (data checksum differs)")
    return meta


def common_seed(metas: list[dict]) -> int:
    """The split seed all artifacts were trained with (they must agree)."""
    seeds = {int(m["split_seed"]) for m in metas}
    if len(seeds) != 1:
        raise DataError(f"the artifacts were trained on different split seeds: {sorted(seeds)}")
    return seeds.pop()
