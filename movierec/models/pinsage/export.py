"""Export a trained PinSage as a versioned artifact (see :mod:`movierec.models.artifact`).

Besides ``item_ids.npy``/``item_vectors.npy`` (every movie of the movies file, computed
with the export neighbourhoods: unit vectors in the shared design, else the output
vectors with the item bias as last column) and ``metadata.json``, a version holds:

* ``input_vectors.npy`` and ``user_layers.npz``: the user tower (``metadata.user_tower``)
  the embedder turns liked ids into a user vector with (numpy only),
* ``model.pt``: the network's ``state_dict`` (torch) and ``config.json`` (hyper-parameters),
* ``vocab.json``: title-token vocabulary and genre list (to rebuild the features),
* ``cold_movie_ids.json``: movies without training edges, embedded from features only.
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

from movierec.compat.dgl import import_dgl
from movierec.models import content
from movierec.models.artifact import ArtifactWriter
from movierec.models.pinsage.calibration import Calibrations
from movierec.models.pinsage.encoder import MODEL, write_tower
from movierec.models.pinsage.graph import TrainingGraph
from movierec.models.pinsage.train import TrainConfig, TrainResult, served_arrays


def export(result: TrainResult, data: TrainingGraph, config: TrainConfig,
           info: dict[str, Any], root: Path | None = None,
           calibration: Calibrations | None = None,
           reasons: np.ndarray | None = None, movies: pd.DataFrame | None = None) -> Path:
    """Write the artifact; ``info`` adds dataset, split, checksum and metrics to metadata;
    ``calibration`` (fitted on validation) sets the served bias weight; ``reasons``:
    :func:`movierec.models.reasons.for_movies` of the training ratings; ``movies`` (the
    data set's frame) fit the content map that embeds movies added later."""
    writer = ArtifactWriter(MODEL, root)
    try:
        torch.save(result.model.state_dict(), writer.path / "model.pt")
        (writer.path / "config.json").write_text(json.dumps(asdict(config), indent=2))
        vocab = {"title_tokens": data.vocab, "genres": list(data.genres)}
        (writer.path / "vocab.json").write_text(json.dumps(vocab))
        cold = data.movie_ids[~data.features.has_edges].tolist()
        (writer.path / "cold_movie_ids.json").write_text(json.dumps(cold))
        served = served_arrays(result.model, result.export_graphs)
        metadata = {**info, **_training_metadata(result, config, len(cold))}
        shared = config.shared_tower
        if not shared:
            towers = ((served.tower,) if calibration is None else
                      (calibration.history.apply(served.tower),
                       calibration.liked.apply(served.tower)))
            metadata["user_tower"] = write_tower(writer.path, *towers)
        if calibration is not None:
            metadata["bias_calibration"] = calibration.metadata()
        metadata["vector_norm"] = "l2" if shared else "none"
        mapped = None if movies is None else content.for_movies(
            movies, data.movie_ids, served.item_vectors, data.features.has_edges, data.genres)
        return writer.finish(metadata, data.movie_ids, served.item_vectors, unit=shared,
                             reasons=reasons, content=mapped, movies=movies)
    except BaseException:
        writer.abort()
        raise


def _training_metadata(result: TrainResult, config: TrainConfig, cold: int) -> dict[str, Any]:
    return {
        "aggregation": config.aggregation,
        "objective": config.objective,
        "dims": {"hidden": config.dim, "layers": config.layers, "split_roles": config.split_roles,
                 "item_bias": config.item_bias, "user_layers": config.user_layers,
                 "free": config.free_dim, "free_shared": config.free_shared,
                 "free_bias": config.free_bias, "input_scale": config.input_scale},
        "cold_movies": {"count": cold, "file": "cold_movie_ids.json"},
        "training": {"seconds": round(result.seconds, 1), "best_epoch": result.best_epoch,
                     "epochs_run": len(result.log), "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "dgl": import_dgl().__version__,
                     "python": platform.python_version(),
                     "distributed": result.distributed, "log": result.log},
        "valid_metrics": {k: round(v, 5) for k, v in result.best_valid.items()},
        "seed": config.seed,
        "score": "dot",
        "numpy": np.__version__,
    }
