"""Retriever on real embedded Milvus: correctness vs brute force, filters, swaps, errors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_helpers import wait_serving
from pymilvus import MilvusClient

from movierec.common.v1 import common_pb2
from movierec.models.artifact import normalize
from movierec.retriever.v1 import retriever_pb2 as pb
from movierec.retriever.v1 import retriever_pb2_grpc
from movierec.services.retriever.loader import ItemBatch, publish
from movierec.services.retriever.milvus import MilvusVectors
from movierec.services.retriever.server import RetrieverSettings, create_server
from movierec.stack.local_milvus import LocalMilvus

GENRES = ["Action", "Comedy", "Drama", "Children's"]
N, DIM = 300, 16


def items(seed: int) -> ItemBatch:
    rng = np.random.default_rng(seed)
    vectors = normalize(rng.normal(size=(N, DIM)))
    genres = [[GENRES[i % 4]] + ([GENRES[(i + 1) % 4]] if i % 3 == 0 else []) for i in range(N)]
    return ItemBatch(np.arange(1, N + 1), vectors, 1950 + np.arange(N) % 50, genres)


@pytest.fixture(scope="module")
def loaded(milvus_uri: str) -> tuple[str, ItemBatch]:
    batch = items(1)
    store = MilvusVectors(milvus_uri, timeout=10)
    publish(store, "testmodel", "v1", batch, drain_seconds=0, progress=False)
    store.close()
    return milvus_uri, batch


def run(uri: str, scenario, **overrides):
    async def main():
        config = RetrieverSettings(milvus_uri=uri, metrics_port=-1, health_interval=0.2,
                                   **overrides)
        server, port = await create_server(config, 0)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            await wait_serving(channel)
            return await scenario(retriever_pb2_grpc.RetrieverStub(channel))
        finally:
            await channel.close()
            await server.stop(0)
    return asyncio.run(main())


async def _error(call):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details()


def test_search_matches_brute_force(loaded) -> None:
    uri, batch = loaded
    query = batch.vectors[7] * 0.5 + batch.vectors[42] * 0.5

    async def scenario(stub):
        return await stub.Search(pb.SearchRequest(model="testmodel", vector=query.tolist(),
                                                  top_k=10), timeout=5)
    reply = run(uri, scenario)
    expected = np.argsort(-(batch.vectors @ query))[:10] + 1
    assert [h.movie_id for h in reply.hits] == expected.tolist()
    scores = [h.score for h in reply.hits]
    assert scores == sorted(scores, reverse=True)
    assert reply.model_version == "v1"


def test_filters_and_exclusions_still_fill_top_k(loaded) -> None:
    uri, batch = loaded
    query = batch.vectors[3]

    async def scenario(stub):
        return await stub.Search(pb.SearchRequest(
            model="testmodel", vector=query.tolist(), top_k=20, exclude_ids=[4, 5, 6],
            genres=["Comedy", "Children's"],
            years=common_pb2.YearRange(min_year=1960, max_year=1980)), timeout=5)
    reply = run(uri, scenario)
    allowed = [i for i in range(N) if i + 1 not in (4, 5, 6)
               and {"Comedy", "Children's"} & set(batch.genres[i])
               and 1960 <= batch.years[i] <= 1980]
    expected = sorted(allowed, key=lambda i: -float(batch.vectors[i] @ query))[:20]
    assert [h.movie_id for h in reply.hits] == [i + 1 for i in expected]
    assert len(reply.hits) == 20


def test_get_vectors_and_describe(loaded) -> None:
    uri, batch = loaded

    async def scenario(stub):
        vectors = await stub.GetVectors(pb.GetVectorsRequest(model="testmodel",
                                                             movie_ids=[2, 9999, 1]), timeout=5)
        described = await stub.DescribeModel(pb.DescribeModelRequest(model="testmodel"),
                                             timeout=5)
        return vectors, described
    vectors, described = run(uri, scenario)
    assert [v.movie_id for v in vectors.vectors] == [2, 1]
    assert np.allclose(vectors.vectors[0].vector, batch.vectors[1], atol=1e-6)
    assert list(vectors.missing_ids) == [9999]
    assert (described.dim, described.count, described.metric) == (DIM, N, "IP")
    assert described.index_type == "FLAT"


@pytest.mark.parametrize(("request_", "code", "field"), [
    (pb.SearchRequest(model="testmodel", vector=[0.1] * 3), "INVALID_ARGUMENT", "vector"),
    (pb.SearchRequest(model="testmodel", vector=[]), "INVALID_ARGUMENT", "vector"),
    (pb.SearchRequest(model="testmodel", vector=[float("nan")] * DIM), "INVALID_ARGUMENT",
     "vector"),
    (pb.SearchRequest(model="testmodel", vector=[0.1] * DIM, top_k=1001), "INVALID_ARGUMENT",
     "top_k"),
    (pb.SearchRequest(model="testmodel", vector=[0.1] * DIM, genres=['x"] or id > 0 or ["']),
     "INVALID_ARGUMENT", "genres"),
    (pb.SearchRequest(model="nosuchmodel", vector=[0.1] * DIM), "NOT_FOUND", "model"),
    (pb.SearchRequest(model="Bad Model!", vector=[0.1] * DIM), "INVALID_ARGUMENT", "model"),
])
def test_bad_requests(loaded, request_, code, field) -> None:
    async def scenario(stub):
        return await _error(stub.Search(request_, timeout=5))
    got, details = run(loaded[0], scenario)
    assert got.name == code and field in details


def test_swap_under_concurrent_searches_never_fails(milvus_uri: str) -> None:
    store = MilvusVectors(milvus_uri, timeout=10)
    publish(store, "swapmodel", "v1", items(1), drain_seconds=0, progress=False)
    query = items(1).vectors[0].tolist()

    async def scenario(stub):
        failures, versions, done = [], set(), asyncio.Event()

        async def searcher():
            while not done.is_set():
                try:
                    reply = await stub.Search(pb.SearchRequest(model="swapmodel", vector=query,
                                                               top_k=5), timeout=5)
                    versions.add(reply.model_version)
                    assert len(reply.hits) == 5
                except (grpc.aio.AioRpcError, AssertionError) as exc:
                    failures.append(exc)
        tasks = [asyncio.create_task(searcher()) for _ in range(4)]
        for version in ("v2", "v3", "v3"):  # the live version loaded again: still no failure
            await asyncio.to_thread(publish, store, "swapmodel", version, items(2),
                                    None, 3.0, False)
        await asyncio.sleep(1.0)
        done.set()
        await asyncio.gather(*tasks)
        final = await stub.DescribeModel(pb.DescribeModelRequest(model="swapmodel"), timeout=5)
        return failures, versions, final
    failures, versions, final = run(milvus_uri, scenario, registry_ttl=0.2)
    store.close()
    assert failures == []
    assert {"v1", "v3"} <= versions and final.version == "v3"
    names = [c for c in MilvusClient(uri=milvus_uri).list_collections() if "swapmodel" in c]
    assert names == [final.collection] and final.collection.startswith("mr_swapmodel_v3_")


def test_unavailable_within_deadline_and_recovery(tmp_path: Path) -> None:
    milvus = LocalMilvus(tmp_path / "milvus")
    uri = milvus.start()
    store = MilvusVectors(uri, timeout=10)
    publish(store, "m", "v1", items(3), drain_seconds=0, progress=False)
    store.close()
    vector = items(3).vectors[0].tolist()

    async def scenario(stub):
        await stub.Search(pb.SearchRequest(model="m", vector=vector), timeout=5)
        milvus.stop()
        start = time.monotonic()
        code, _ = await _error(stub.Search(pb.SearchRequest(model="m", vector=vector),
                                           timeout=1.0))
        elapsed = time.monotonic() - start
        milvus.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = await stub.Search(pb.SearchRequest(model="m", vector=vector), timeout=5)
                return code, elapsed, reply
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    try:
        code, elapsed, reply = run(uri, scenario, call_timeout=0.5, registry_ttl=0)
    finally:
        milvus.stop()
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert elapsed < 1.5
    assert reply.hits[0].movie_id == 1


@pytest.mark.parametrize("uri", ["", "./milvus.db", "/var/lib/milvus.db"])
def test_retriever_refuses_an_embedded_database_file(uri: str) -> None:
    from movierec.settings import SettingsError

    with pytest.raises(SettingsError, match="MILVUS_URI"):
        asyncio.run(create_server(RetrieverSettings(milvus_uri=uri, metrics_port=-1), 0))


def test_lite_falls_back_to_exact_search_when_an_index_is_refused(milvus_uri: str) -> None:
    store = MilvusVectors(milvus_uri, timeout=10)
    live = publish(store, "hnswmodel", "v1", items(4), index_type="HNSW", drain_seconds=0,
                   progress=False)
    store.close()
    assert live.index_type == "FLAT" and live.count == N
