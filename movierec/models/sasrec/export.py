"""Export a trained SASRec as a versioned artifact (see :mod:`movierec.models.artifact`).

A version holds ``item_ids.npy``/``item_vectors.npy`` (the item table: every movie of
the movies file, in item-index order; Milvus ranks them by inner product with the
query vector), ``weights.npz`` (the network's arrays, read by :mod:`.encoder` with
numpy), ``config.json``, the content map (movies added later), the reasons table and
``metadata.json`` (dims, training log, validation metrics).
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from movierec.models import content
from movierec.models.artifact import ArtifactWriter
from movierec.models.sasrec.encoder import MODEL, WEIGHTS_FILE
from movierec.models.sasrec.train import TrainConfig, TrainResult


def export(result: TrainResult, config: TrainConfig, info: dict[str, Any],
           trained: np.ndarray, movies: pd.DataFrame, reasons: np.ndarray | None = None,
           root: Path | None = None) -> Path:
    """Write the artifact; ``trained`` (bool per item) marks the items seen in training
    (the content map is fitted on them); ``info`` adds dataset, split and metrics."""
    writer = ArtifactWriter(MODEL, root)
    try:
        arrays = {k: v.detach().cpu().numpy().astype(np.float32)
                  for k, v in result.model.state_dict().items()}
        np.savez(writer.path / WEIGHTS_FILE, **arrays)
        (writer.path / "config.json").write_text(json.dumps(asdict(config), indent=2))
        ids = result.index.movie_ids
        vectors = arrays["items.weight"][1:]
        genres = sorted({g for gs in movies["genres"] for g in gs})
        mapped = content.for_movies(movies, ids, vectors, trained, genres)
        meta = {**info, **_training_metadata(result, config)}
        return writer.finish(meta, ids, vectors, unit=False, reasons=reasons, content=mapped,
                             movies=movies)
    except BaseException:
        writer.abort()
        raise


def _training_metadata(result: TrainResult, config: TrainConfig) -> dict[str, Any]:
    return {
        "dims": {"hidden": config.dim, "layers": config.layers, "heads": config.heads,
                 "max_len": config.max_len, "ffn": config.ffn,
                 "positions": config.positions, "gaps": config.gaps},
        "objective": "full softmax cross-entropy, next item at every position",
        "optimizer": {"name": "AdamW", "lr": config.lr, "batch": config.batch,
                      "schedule": config.schedule, "warmup_steps": config.warmup_steps,
                      "max_epochs": config.max_epochs, "dropout": config.dropout},
        "interactions": "every rating, ordered by time (ties: as recorded)",
        "training": {"seconds": round(result.seconds, 1), "best_epoch": result.best_epoch,
                     "epochs_run": len(result.log), "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "python": platform.python_version(),
                     "log": result.log},
        "valid_metrics": {k: round(v, 5) for k, v in result.best_valid.items()},
        "seed": config.seed,
        "score": "dot",
        "numpy": np.__version__,
    }
