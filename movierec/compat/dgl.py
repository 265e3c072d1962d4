"""The one place that imports DGL; everything else calls :func:`import_dgl`.

Why this exists (dgl 1.1.3 beside torch 2.13):

* dgl 1.1.3 picks its tensor backend at import time from ``DGLBACKEND`` or
  ``~/.dgl/config.json``. When neither is set it prints "DGL backend not selected
  or invalid..." to stdout and writes the config file into the home directory (noise
  in CLI output and a side effect in containers with a read-only home). We set
  ``DGLBACKEND=pytorch`` before the first import so it does neither.
* dgl 1.1.3 imports ``packaging`` (its version checks) without declaring it as a
  dependency; the ``pinsage`` extra in pyproject.toml pins it. A missing
  ``packaging`` surfaces here as a clear :class:`ImportError` message instead of
  a traceback from deep inside dgl.
* dgl 1.1.3 is the newest dgl whose C++ binaries load beside torch 2.13 on CPU;
  newer dgl wheels need a matching torch build.
* Its import emits DeprecationWarning/UserWarning from old torch APIs; they are
  silenced for the duration of the import only.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

BACKEND = "pytorch"


def import_dgl() -> ModuleType:
    """Import and return the ``dgl`` module configured for the PyTorch backend."""
    os.environ.setdefault("DGLBACKEND", BACKEND)
    if os.environ["DGLBACKEND"] != BACKEND:
        raise ImportError(f"DGLBACKEND={os.environ['DGLBACKEND']!r}; movierec needs {BACKEND!r}")
    try:
        importlib.import_module("packaging.version")
    except ImportError as exc:
        raise ImportError("dgl 1.1.3 needs the 'packaging' package: "
                          "pip install 'movierec[pinsage]'") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("dgl")
