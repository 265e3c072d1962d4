"""What a loaded collection holds, how collections are named, and how versions order.

Every collection the loader creates is named ``mr_<model>_<version>_<load id>`` and
carries a :class:`ModelCollection` record (with the loader's mark) as its description,
which is how the loader and both live-pointer backends recognise it exactly.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, replace

from movierec.errors import InvalidArgument

MODEL = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
MARK = "movierec.loader/v1"
INDEX_TYPES = ("HNSW", "IVF_FLAT", "FLAT")


@dataclass(frozen=True)
class ModelCollection:
    """One loaded collection of a model: what the live pointer points at."""

    model: str
    version: str
    collection: str
    dim: int
    count: int
    index_type: str
    metric: str = "IP"
    #: capacity of the ``reasons`` field (each movie's co-liked movies,
    #: :mod:`movierec.models.reasons`); 0: a collection loaded without one
    reasons: int = 0

    def description(self) -> str:
        """The collection's description: this record and the loader's mark."""
        return json.dumps({"mark": MARK, **asdict(self)})

    @classmethod
    def from_description(cls, name: str, text: str) -> ModelCollection | None:
        """The record in collection ``name``'s description; None unless the loader wrote it."""
        try:
            record = json.loads(text or "{}")
        except ValueError:
            return None
        if not isinstance(record, dict) or record.pop("mark", None) != MARK:
            return None
        record["collection"] = name
        try:
            return cls(**record)
        except TypeError:
            return None


@dataclass(frozen=True)
class IndexSpec:
    """The vector index a load builds (RETRIEVER_INDEX, RETRIEVER_HNSW_*)."""

    kind: str = "HNSW"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    exact_below: int = 100_000

    def for_count(self, count: int) -> IndexSpec:
        """The index for a collection of ``count`` vectors: exact FLAT below
        ``exact_below``, where a full scan is cheap and an approximate index only loses
        recall (HNSW found 95 % of the exact top 10 of the MovieLens fusion vectors, whose
        inner products are not cosines), so the served ranking is the evaluated one."""
        if self.kind != "FLAT" and count < self.exact_below:
            return replace(self, kind="FLAT")
        return self

    def params(self, count: int) -> dict:
        if self.kind == "HNSW":
            return {"M": self.hnsw_m, "efConstruction": self.hnsw_ef_construction}
        if self.kind == "IVF_FLAT":
            return {"nlist": int(min(65536, max(16, 4 * math.sqrt(count))))}
        return {}


def collection_name(model: str, version: str, load_id: str) -> str:
    """``mr_<model>_<version>_<load id>``: every load gets a fresh collection, so loading
    the live version again never touches the collection searches are using."""
    return f"mr_{model}_{re.sub(r'[^A-Za-z0-9]', '_', version).lower()}_{load_id}"


def alias_name(model: str) -> str:
    """The alias that names ``model``'s live collection on a Milvus server."""
    return f"mr_{model}"


def check_model(model: str) -> str:
    if not MODEL.match(model):
        raise InvalidArgument("model", "must be a lower-case model name like 'fusion'")
    return model


def version_key(version: str) -> tuple:
    """Order of versions: numbers inside compare as numbers (``v10`` after ``v9``), so
    artifact versions (``20261122T190102Z``) sort by time."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.findall(r"\d+|\D+", version))
