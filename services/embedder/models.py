"""The models the embedder serves, loaded from artifacts and swapped in when newer.

``ModelSet.reload`` reads each model's ``LATEST`` pointer and loads a version only
when it differs from the one in memory; the new encoders replace the old ones in one
assignment, so a request sees either the old or the new set, never a mix. Servers
only load and infer: nothing here trains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from movierec.errors import DataError, FailedPrecondition
from movierec.models import registry
from movierec.models.artifact import artifacts_root, latest, read_item_vectors, read_metadata
from movierec.models.content import ContentMap
from movierec.models.onboarding import Spread
from movierec.server.metrics import live_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """One loaded model version."""

    model: str
    version: str
    dim: int
    path: Path
    encoder: object
    content: ContentMap | None = None   # embeds movies the model did not train on
    items: frozenset[int] = frozenset()  # movies the artifact has a vector for
    spread: Spread | None = None         # how its scores spread over its catalog


@dataclass
class ModelSet:
    """The current encoder of every registered model in this process."""

    root: Path | None = None
    current: dict[str, Loaded] = field(default_factory=dict)

    def _load(self, model: str, path: Path) -> Loaded:
        meta = read_metadata(path)
        ids, vectors = read_item_vectors(path)
        return Loaded(model, str(meta["version"]), int(meta["dim"]), path,
                      registry.encoder_class(model).load(path), ContentMap.load(path),
                      frozenset(np.asarray(ids).tolist()), Spread.of(vectors))

    def reload(self) -> list[str]:
        """Load every model whose LATEST version is new; return what changed."""
        changed, updated = [], dict(self.current)
        for model in registry.NAMES:
            try:
                path = latest(model, self.root)
            except DataError:
                continue
            if model in updated and updated[model].path == path:
                continue
            try:
                updated[model] = self._load(model, path)
            except Exception as exc:  # noqa: BLE001 - any broken artifact keeps the old model
                log.error("could not load %s from %s (%s); keeping %s", model, path,
                          type(exc).__name__, updated[model].version if model in updated
                          else "nothing")
                continue
            changed.append(f"{model}@{updated[model].version}")
            live_version("embedder", model, updated[model].version,
                         self.current[model].version if model in self.current else None)
        self.current = updated
        if changed:
            log.info("models loaded", extra={"models": changed,
                                             "root": str(artifacts_root(self.root))})
        return changed

    @property
    def ready(self) -> bool:
        return all(m in self.current for m in registry.NAMES)

    def get(self, model: str) -> Loaded:
        try:
            return self.current[model]
        except KeyError:
            raise FailedPrecondition(f"no {model} model loaded; train and export it") from None
