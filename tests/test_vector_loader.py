"""The vector loader on both kinds of Milvus: what it drops, what it refuses, how
Milvus failures reach callers, and ``movierec load vectors``."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from pymilvus import MilvusClient, MilvusException
from test_retriever import N, items, load

from movierec.errors import FailedPrecondition, Unavailable
from movierec.models.artifact import ArtifactWriter
from movierec.server.status import GENERIC_INTERNAL, status_for
from movierec.services.retriever.failures import translate
from movierec.services.retriever.loader import StaleVersion
from movierec.services.retriever.milvus import MilvusVectors
from movierec.services.retriever.records import version_key
from movierec.stack.jobs import load_vectors_main


def collections(uri: str, model: str) -> list[str]:
    store = MilvusVectors(uri)
    try:
        return sorted(r.collection for r in store.collections_of(model))
    finally:
        store.close()


def test_loader_drops_only_the_collections_it_made_for_that_model(milvus_any: str) -> None:
    client = MilvusClient(uri=milvus_any)
    if not client.has_collection("mr_dropme_manual"):  # named like ours, not made by us
        client.create_collection("mr_dropme_manual", dimension=4, metric_type="IP")
    load(milvus_any, "dropme_v2", "v1", items(5))
    first = load(milvus_any, "dropme", "v1", items(5))
    second = load(milvus_any, "dropme", "v2", items(6))
    third = load(milvus_any, "dropme", "v3", items(7))
    names = client.list_collections()
    assert first.collection not in names             # older than the previous version
    assert second.collection in names and third.collection in names   # previous and live
    assert "mr_dropme_manual" in names
    assert collections(milvus_any, "dropme_v2") != []  # `dropme_v2` is not `dropme`
    assert collections(milvus_any, "dropme") == sorted([second.collection, third.collection])
    fourth = load(milvus_any, "dropme", "v4", items(8), keep_previous=False)
    assert collections(milvus_any, "dropme") == [fourth.collection]


def test_an_older_version_never_replaces_a_newer_one_unless_forced(milvus_any: str) -> None:
    load(milvus_any, "versioned", "v10", items(7))
    with pytest.raises(StaleVersion, match="v10 is live and newer than v9"):
        load(milvus_any, "versioned", "v9", items(8))
    store = MilvusVectors(milvus_any)
    assert store.resolve("versioned").version == "v10"
    assert load(milvus_any, "versioned", "v9", items(8), force=True).version == "v9"
    assert store.resolve("versioned").version == "v9"
    store.close()


def test_versions_order_by_their_numbers() -> None:
    for ordered in (["v1", "v2", "v9", "v10"],
                    ["20251231T235959Z", "20260101T000000Z", "20260101T000001Z"]):
        assert sorted(reversed(ordered), key=version_key) == ordered


def _artifact(root: Path, version: str, seed: int) -> Path:
    vectors = np.random.default_rng(seed).normal(size=(N, 8))
    return ArtifactWriter("clitest", root, version).finish({"dataset": "ml-1m"},
                                                           np.arange(1, N + 1), vectors)


def test_load_vectors_command_refuses_an_older_version_unless_forced(
        milvus_uri: str, small_ml_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MILVUS_URI", milvus_uri)
    newer = _artifact(tmp_path, "20260102T000000Z", 1)
    older = _artifact(tmp_path, "20260101T000000Z", 2)
    common = ["--model", "clitest", "--data-dir", str(small_ml_dir), "--drain-seconds", "0",
              "--quiet"]
    assert load_vectors_main([*common, "--artifact", str(newer)]) == 0
    assert load_vectors_main([*common, "--artifact", str(older)]) == 1
    assert "pass --force" in capsys.readouterr().out
    assert load_vectors_main([*common, "--artifact", str(older), "--force"]) == 0
    store = MilvusVectors(milvus_uri)
    assert store.resolve("clitest").version == "20260101T000000Z"
    store.close()


def _rpc_error(code: grpc.StatusCode) -> grpc.RpcError:
    error = grpc.RpcError()
    error.code = lambda: code
    return error


@pytest.mark.parametrize(("error", "expected"), [
    (MilvusException(2, "Fail connecting to server on 10.0.0.7:19530"), Unavailable),
    (MilvusException(1, "service not ready"), Unavailable),
    (MilvusException(101, "collection not loaded[collection=4708563]"), Unavailable),
    (MilvusException(100, "collection not found[collection=mr_x_v1_ab]"), FailedPrecondition),
    (_rpc_error(grpc.StatusCode.UNAVAILABLE), Unavailable),
    (_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED), Unavailable),
    (TimeoutError(), Unavailable),
])
def test_milvus_failures_a_retry_can_fix_are_unavailable(error, expected) -> None:
    translated = translate(error)
    assert isinstance(translated, expected)
    code, message = status_for(translated)
    assert code.name == expected.__name__.upper().replace("FAILEDPRECONDITION",
                                                          "FAILED_PRECONDITION")
    assert "10.0.0.7" not in message and "mr_x" not in message and "4708563" not in message


@pytest.mark.parametrize("error", [
    MilvusException(65535, "failed to create query plan: cannot parse expression: id >"),
    MilvusException(1100, "index not found[collection=mr_x_v1_ab]"),
    _rpc_error(grpc.StatusCode.UNIMPLEMENTED),
])
def test_other_milvus_failures_are_internal_with_a_generic_message(error) -> None:
    assert translate(error) is error
    assert status_for(error) == (grpc.StatusCode.INTERNAL, GENERIC_INTERNAL)
