"""The two live-pointer backends: which collection serves a model, swapped atomically.

* :class:`AliasPointer` (a Milvus server): the alias ``mr_<model>`` names the live
  collection; a load ends with ``alter_alias`` (``create_alias`` the first time), and the
  record comes from the aliased collection's description (one ``describe_collection``).
* :class:`RegistryPointer` (Milvus Lite 2.5, which has no aliases): rows of the
  ``mr_live`` collection; a model's newest row holds the record of its live collection.

:func:`choose` picks by asking the server for its aliases: Lite answers UNIMPLEMENTED.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import grpc
from pymilvus import DataType, MilvusClient, MilvusException

from movierec.errors import FailedPrecondition, NotFound
from movierec.services.retriever.failures import is_missing, reraise
from movierec.services.retriever.records import ModelCollection, alias_name, check_model

REGISTRY = "mr_live"


def _not_loaded(model: str) -> NotFound:
    return NotFound(f"model {model!r} has no vectors loaded")


class AliasPointer:
    """Live collections named by Milvus aliases."""

    kind = "alias"

    def __init__(self, client: MilvusClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    def ensure(self) -> None:
        self.client.list_aliases(timeout=self.timeout)

    def resolve(self, model: str) -> ModelCollection:
        try:
            info = self.client.describe_collection(alias_name(model), timeout=self.timeout)
        except MilvusException as exc:
            if is_missing(exc):
                raise _not_loaded(model) from exc
            raise
        record = ModelCollection.from_description(info["collection_name"],
                                                  info.get("description", ""))
        if record is None or record.model != model:
            raise FailedPrecondition(f"the alias of model {model!r} names a collection the "
                                     "vector loader did not create; load its vectors again")
        return record

    def point(self, live: ModelCollection) -> None:
        alias = alias_name(live.model)
        if alias in self.client.list_aliases(timeout=self.timeout)["aliases"]:
            self.client.alter_alias(live.collection, alias, timeout=self.timeout)
        else:
            self.client.create_alias(live.collection, alias, timeout=self.timeout)


class RegistryPointer:
    """Live collections recorded in the ``mr_live`` collection (Milvus Lite).

    One row per load, keyed by collection; a model's newest row (highest ``seq``) names its
    live collection. A load inserts its row and only then deletes the model's older rows,
    so a reader always finds one (Lite's upsert is a delete then an insert: a reader in
    between found none).
    """

    kind = "registry"

    def __init__(self, client: MilvusClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self._ready = False

    def ensure(self) -> None:
        """Create and load the registry unless this client already did (cheap probe then)."""
        exists = self.client.has_collection(REGISTRY, timeout=self.timeout)
        if exists and self._ready:
            return
        if not exists:
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("collection", DataType.VARCHAR, is_primary=True, max_length=128)
            schema.add_field("model", DataType.VARCHAR, max_length=64)
            schema.add_field("seq", DataType.INT64)
            schema.add_field("record", DataType.VARCHAR, max_length=1024)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
            index = self.client.prepare_index_params()
            index.add_index("vector", index_type="FLAT", metric_type="L2")
            self.client.create_collection(REGISTRY, schema=schema, index_params=index,
                                          timeout=self.timeout)
        self.client.load_collection(REGISTRY, timeout=self.timeout)
        self._ready = True

    def resolve(self, model: str) -> ModelCollection:
        rows = self.client.query(REGISTRY, filter=f'model == "{check_model(model)}"',
                                 output_fields=["record", "seq"], timeout=self.timeout)
        if not rows:
            raise _not_loaded(model)
        return ModelCollection(**json.loads(max(rows, key=lambda r: r["seq"])["record"]))

    def point(self, live: ModelCollection) -> None:
        self.ensure()
        seq = time.time_ns()
        self.client.insert(REGISTRY, [{"collection": live.collection, "model": live.model,
                                       "seq": seq, "record": json.dumps(asdict(live)),
                                       "vector": [0.0, 0.0]}], timeout=self.timeout)
        self.client.delete(REGISTRY, filter=f'model == "{check_model(live.model)}" and '
                                            f"seq < {seq}", timeout=self.timeout)


def choose(client: MilvusClient, timeout: float) -> AliasPointer | RegistryPointer:
    """Aliases where the server has them, the registry collection where it does not."""
    try:
        client.list_aliases(timeout=timeout)
    except grpc.RpcError as exc:
        if callable(getattr(exc, "code", None)) and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            return RegistryPointer(client, timeout)
        reraise(exc)
    except MilvusException as exc:
        reraise(exc)
    return AliasPointer(client, timeout)
