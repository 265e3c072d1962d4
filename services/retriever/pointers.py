"""The two live-pointer backends: which collection serves a model, swapped atomically.

* :class:`AliasPointer` (a Milvus server): the alias ``mr_<model>`` names the live
  collection; a load ends with ``alter_alias`` (``create_alias`` the first time), and the
  record comes from the aliased collection's description (one ``describe_collection``).
* :class:`RegistryPointer` (Milvus Lite 2.5, which has no aliases): a row per model in
  the ``mr_registry`` collection holds the record, replaced by one upsert.

:func:`choose` picks by asking the server for its aliases: Lite answers UNIMPLEMENTED.
"""

from __future__ import annotations

import json

import grpc
from pymilvus import DataType, MilvusClient, MilvusException

from movierec.errors import FailedPrecondition, NotFound
from movierec.services.retriever.failures import is_missing, reraise
from movierec.services.retriever.records import ModelCollection, alias_name

REGISTRY = "mr_registry"


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
    """Live collections recorded in the ``mr_registry`` collection (Milvus Lite)."""

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
            schema.add_field("model", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("record", DataType.VARCHAR, max_length=1024)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
            index = self.client.prepare_index_params()
            index.add_index("vector", index_type="FLAT", metric_type="L2")
            self.client.create_collection(REGISTRY, schema=schema, index_params=index,
                                          timeout=self.timeout)
        self.client.load_collection(REGISTRY, timeout=self.timeout)
        self._ready = True

    def resolve(self, model: str) -> ModelCollection:
        rows = self.client.query(REGISTRY, ids=[model], output_fields=["record"],
                                 timeout=self.timeout)
        if not rows:
            raise _not_loaded(model)
        return ModelCollection(**json.loads(rows[0]["record"]))

    def point(self, live: ModelCollection) -> None:
        self.ensure()
        self.client.upsert(REGISTRY, [{"model": live.model, "record": json.dumps(
            live.__dict__), "vector": [0.0, 0.0]}], timeout=self.timeout)


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
