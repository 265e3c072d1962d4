"""The embedder's model set: newer artifacts are swapped in, broken ones never replace a
working model."""

from __future__ import annotations

import shutil
from pathlib import Path

from stack_fixture import Stack

from movierec.services.embedder.models import ModelSet


def test_a_broken_newer_artifact_keeps_the_loaded_model(stack: Stack, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    shutil.copytree(stack.env["MOVIEREC_ARTIFACTS"], root)
    models = ModelSet(root)
    assert sorted(models.reload()) and models.ready
    before = {name: loaded.version for name, loaded in models.current.items()}
    for name in ("fusion", "pinsage"):
        broken = root / name / "29990101T000000Z"
        shutil.copytree(models.current[name].path, broken)
        for array in ("item_vectors.npy", "user_tower.npz"):
            if (broken / array).exists():
                (broken / array).write_bytes(b"PK\x03\x04 truncated")
        (root / name / "LATEST").write_text(broken.name + "\n")
    assert models.reload() == []
    assert {n: loaded.version for n, loaded in models.current.items()} == before
    assert models.ready
