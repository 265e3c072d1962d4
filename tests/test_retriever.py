"""Retriever on real Milvus, both kinds (milvus-lite and a Milvus 2.3 server): correctness
vs brute force, filters, version consistency, swaps under load, restarts, errors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np
import prometheus_client
import pytest
from grpc_helpers import wait_serving
from pymilvus import MilvusClient

from movierec.common.v1 import common_pb2
from movierec.models.artifact import normalize
from movierec.retriever.v1 import retriever_pb2 as pb
from movierec.retriever.v1 import retriever_pb2_grpc
from movierec.services.retriever.batcher import BatchedSearch
from movierec.services.retriever.engine import SearchEngine
from movierec.services.retriever.loader import IndexSpec, ItemBatch, publish
from movierec.services.retriever.memory import MEMORY_SEARCHES
from movierec.services.retriever.milvus import Filters, MilvusVectors
from movierec.services.retriever.records import ModelCollection, alias_name
from movierec.services.retriever.server import RetrieverSettings, create_server
from movierec.stack.local_milvus import LocalMilvus
from movierec.stack.local_milvus_server import LocalMilvusServer, isolation_error

GENRES = ["Action", "Comedy", "Drama", "Children's"]
N, DIM = 300, 16


def items(seed: int, dim: int = DIM) -> ItemBatch:
    rng = np.random.default_rng(seed)
    vectors = normalize(rng.normal(size=(N, dim)))
    genres = [[GENRES[i % 4]] + ([GENRES[(i + 1) % 4]] if i % 3 == 0 else []) for i in range(N)]
    return ItemBatch(np.arange(1, N + 1), vectors, 1950 + np.arange(N) % 50, genres)


def load(uri: str, model: str, version: str, batch: ItemBatch, **kwargs):
    store = MilvusVectors(uri, timeout=30)
    try:
        return publish(store, model, version, batch, drain_seconds=0, progress=False, **kwargs)
    finally:
        store.close()


@pytest.fixture(scope="module")
def loaded(milvus_any: str) -> tuple[str, ItemBatch]:
    batch = items(1)
    load(milvus_any, "testmodel", "v1", batch, index=IndexSpec(exact_below=0))  # HNSW too
    return milvus_any, batch


def run(uri: str, scenario, **overrides):
    """``scenario(stub)`` against a retriever over ``uri``; searches go to Milvus unless
    ``memory_below`` is given (tests/test_retriever.py's memory tests)."""
    async def main():
        config = RetrieverSettings(milvus_uri=uri, metrics_port=-1, health_interval=0.2,
                                   **{"memory_below": 0, **overrides})
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
                                                  top_k=10, model_version="v1"), timeout=5)
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


def test_long_exclusion_lists_are_dropped_locally_and_still_fill_top_k(loaded) -> None:
    """A user's whole history as exclusions: never a Milvus filter, the same answer."""
    uri, batch = loaded
    query = batch.vectors[11]
    excluded = list(range(1, N, 2))[:140] + [12]

    async def scenario(stub):
        return await stub.Search(pb.SearchRequest(model="testmodel", vector=query.tolist(),
                                                  top_k=25, exclude_ids=excluded), timeout=5)
    reply = run(uri, scenario, batch_exclude=16)       # too long to batch: searched alone
    allowed = [i for i in range(N) if i + 1 not in set(excluded)]
    expected = sorted(allowed, key=lambda i: -float(batch.vectors[i] @ query))[:25]
    assert [h.movie_id for h in reply.hits] == [i + 1 for i in expected]


def reasons_table(n: int) -> np.ndarray:
    """Movie i's co-liked row: i+1, i+2, i+3 (0-padded past the end)."""
    ids = np.arange(1, n + 1)[:, None] + np.arange(1, 4)[None, :]
    return np.where(ids <= n, ids, 0)


@pytest.fixture(scope="module")
def explained(milvus_any: str) -> tuple[str, ItemBatch]:
    batch = items(5)
    batch = ItemBatch(batch.ids, batch.vectors, batch.years, batch.genres, reasons_table(N))
    load(milvus_any, "explained", "e1", batch)
    return milvus_any, batch


def test_hits_carry_the_liked_movie_that_explains_them_and_their_reading(explained) -> None:
    uri, batch = explained
    query = batch.vectors[20]
    weights = np.linspace(-1, 1, DIM).astype(np.float32)
    liked = [batch_id for batch_id in range(1, N + 1, 5)]

    async def scenario(stub):
        return await stub.Search(pb.SearchRequest(
            model="explained", vector=query.tolist(), top_k=30, liked_ids=liked,
            reading=common_pb2.Reading(vector=weights.tolist(), offset=3.0, low=1.0,
                                       high=5.0)), timeout=5)
    reply = run(uri, scenario)
    assert [h.movie_id for h in reply.hits] == (np.argsort(-(batch.vectors @ query))[:30]
                                                + 1).tolist()
    for hit in reply.hits:
        row = [m for m in reasons_table(N)[hit.movie_id - 1] if m]
        assert hit.reason_movie_id == next((m for m in row if m in set(liked)), 0)
        expected = np.clip(3.0 + batch.vectors[hit.movie_id - 1] @ weights, 1.0, 5.0)
        assert hit.HasField("reading") and hit.reading == pytest.approx(expected, abs=1e-5)
    assert {h.reason_movie_id for h in reply.hits} - {0}     # some hits are explained


def test_a_movies_own_vector_searches_for_similar_movies(explained, loaded) -> None:
    uri, batch = explained

    async def scenario(stub):
        found = await stub.Search(pb.SearchRequest(model="explained", like_movie_id=8,
                                                   top_k=5, liked_ids=[8]), timeout=5)
        missing = await _error(stub.Search(pb.SearchRequest(model="explained",
                                                            like_movie_id=N + 1), timeout=5))
        both = await _error(stub.Search(pb.SearchRequest(
            model="explained", like_movie_id=8, vector=[0.1] * DIM), timeout=5))
        plain = await stub.Search(pb.SearchRequest(model="testmodel", vector=[0.1] * DIM,
                                                   top_k=3, liked_ids=[1, 2, 3]), timeout=5)
        return found, missing, both, plain
    found, missing, both, plain = run(uri, scenario)
    order = np.argsort(-(batch.vectors @ batch.vectors[7])) + 1
    assert [h.movie_id for h in found.hits] == [m for m in order if m != 8][:5]
    assert missing[0].name == "NOT_FOUND" and both[0].name == "INVALID_ARGUMENT"
    assert all(h.reason_movie_id == 0 and not h.HasField("reading") for h in plain.hits)


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
    assert (described.version, described.dim, described.count, described.metric) == (
        "v1", DIM, N, "IP")
    server = MilvusVectors(uri).uses_aliases
    assert described.index_type == ("HNSW" if server else "FLAT")  # Lite refuses HNSW


@pytest.mark.parametrize(("request_", "code", "text"), [
    (pb.SearchRequest(model="testmodel", vector=[]), "INVALID_ARGUMENT", "vector"),
    (pb.SearchRequest(model="testmodel", vector=[float("nan")] * DIM), "INVALID_ARGUMENT",
     "vector"),
    (pb.SearchRequest(model="testmodel", vector=[0.1] * DIM, top_k=1001), "INVALID_ARGUMENT",
     "top_k"),
    (pb.SearchRequest(model="testmodel", vector=[0.1] * DIM, genres=['x"] or id > 0 or ["']),
     "INVALID_ARGUMENT", "genres"),
    (pb.SearchRequest(model="nosuchmodel", vector=[0.1] * DIM), "NOT_FOUND", "model"),
    (pb.SearchRequest(model="Bad Model!", vector=[0.1] * DIM), "INVALID_ARGUMENT", "model"),
    # the embedder and the live collection disagree: a precondition, never INTERNAL
    (pb.SearchRequest(model="testmodel", vector=[0.1] * 3), "FAILED_PRECONDITION",
     "3 dimensions but the live version v1 has 16"),
    (pb.SearchRequest(model="testmodel", vector=[0.1] * DIM, model_version="v2"),
     "FAILED_PRECONDITION", "comes from version v2 but the retriever serves version v1"),
])
def test_bad_requests(loaded, request_, code, text) -> None:
    async def scenario(stub):
        return await _error(stub.Search(request_, timeout=5))
    got, details = run(loaded[0], scenario)
    assert got.name == code and text in details


def test_swap_under_concurrent_searches_never_fails(milvus_any: str) -> None:
    load(milvus_any, "swapmodel", "v1", items(1))
    query = items(1).vectors[0].tolist()
    store = MilvusVectors(milvus_any, timeout=30)

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
        while not versions and not failures:  # searching v1 before the first swap
            await asyncio.sleep(0.02)
        for version in ("v2", "v3", "v3"):  # the live version loaded again: still no failure
            await asyncio.to_thread(publish, store, "swapmodel", version, items(2),
                                    None, 1.0, False)
        await asyncio.sleep(1.0)
        done.set()
        await asyncio.gather(*tasks)
        final = await stub.DescribeModel(pb.DescribeModelRequest(model="swapmodel"), timeout=5)
        return failures, versions, final
    failures, versions, final = run(milvus_any, scenario, registry_ttl=0.2)
    assert failures == []
    assert {"v1", "v3"} <= versions and final.version == "v3"
    client = MilvusClient(uri=milvus_any)
    names = [c for c in client.list_collections() if "swapmodel" in c]
    # the live load of v3 and the one live before it (kept for its queries and rollback)
    assert final.collection in names and len(names) == 2
    assert all(n.startswith("mr_swapmodel_v3_") for n in names)
    if store.uses_aliases:  # a server swaps with an alias, and has no registry collection
        assert client.describe_alias(alias_name("swapmodel"))["collection_name"] == \
            final.collection
        assert "mr_live" not in client.list_collections()
    store.close()


def local_milvus(kind: str, root: Path):
    if kind == "server" and isolation_error():
        pytest.skip(f"no private network namespace: {isolation_error()}")
    return LocalMilvus(root) if kind == "lite" else LocalMilvusServer(root)


@pytest.mark.parametrize("kind", ["lite", "server"])
def test_unavailable_within_deadline_then_reload_after_restart(kind: str,
                                                               tmp_path: Path) -> None:
    milvus = local_milvus(kind, tmp_path / "milvus")
    uri = milvus.start()
    load(uri, "m", "v1", items(3))
    vector = items(3).vectors[0].tolist()

    async def scenario(stub):
        before = await stub.Search(pb.SearchRequest(model="m", vector=vector), timeout=5)
        milvus.stop()
        start = time.monotonic()
        code, details = await _error(stub.Search(pb.SearchRequest(model="m", vector=vector),
                                                 timeout=1.0))
        elapsed = time.monotonic() - start
        milvus.start()
        deadline = time.monotonic() + 60
        while True:  # the server reloads its collections after the restart
            try:
                after = await stub.Search(pb.SearchRequest(model="m", vector=vector), timeout=5)
                return before, (code, details, elapsed), after
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    try:
        before, (code, details, elapsed), after = run(uri, scenario, call_timeout=0.5,
                                                      registry_ttl=0)
    finally:
        milvus.destroy()
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert "127.0.0.1" not in details and "Milvus" not in details
    assert elapsed < 1.5
    assert after.model_version == "v1" and after.hits == before.hits
    assert after.hits[0].movie_id == 1


@pytest.mark.parametrize("uri", ["", "./milvus.db", "/var/lib/milvus.db"])
def test_retriever_refuses_an_embedded_database_file(uri: str) -> None:
    from movierec.settings import SettingsError

    with pytest.raises(SettingsError, match="MILVUS_URI"):
        asyncio.run(create_server(RetrieverSettings(milvus_uri=uri, metrics_port=-1), 0))


def test_index_from_settings_and_lite_falls_back_to_exact_search(milvus_any: str) -> None:
    spec = RetrieverSettings(hnsw_m=8, hnsw_ef_construction=64, exact_below=0).index_spec()
    assert spec == IndexSpec("HNSW", 8, 64, 0)
    live = load(milvus_any, "hnswmodel", "v1", items(4), index=spec)
    assert live.count == N
    if MilvusVectors(milvus_any).uses_aliases:
        index = MilvusClient(uri=milvus_any).describe_index(live.collection, "vector")
        assert (index["index_type"], int(index["M"]), int(index["efConstruction"])) == (
            "HNSW", 8, 64)
    else:
        assert live.index_type == "FLAT"


def test_small_collections_get_exact_search(milvus_any: str) -> None:
    """Below RETRIEVER_EXACT_BELOW (100,000 by default) a load builds FLAT, so the served
    top k is the exact one the evaluation measures, on a server as on Lite."""
    assert IndexSpec().for_count(99_999).kind == "FLAT"
    assert IndexSpec().for_count(100_000).kind == "HNSW"
    live = load(milvus_any, "exactmodel", "v1", items(5))
    assert live.index_type == "FLAT"
    if MilvusVectors(milvus_any).uses_aliases:
        index = MilvusClient(uri=milvus_any).describe_index(live.collection, "vector")
        assert index["index_type"] == "FLAT"


def _brute(batch: ItemBatch, query: np.ndarray, top_k: int, exclude: tuple[int, ...]) -> list:
    order = [int(i) + 1 for i in np.argsort(-(batch.vectors @ query), kind="stable")]
    return [i for i in order if i not in exclude][:top_k]


def _milvus_calls() -> float:
    """Milvus search calls the retriever's batcher has made in this process so far."""
    return prometheus_client.REGISTRY.get_sample_value(
        "movierec_retriever_queries_per_search_count") or 0.0


def test_concurrent_searches_are_batched_and_answer_as_alone(loaded) -> None:
    """Concurrent exclusion-only searches share Milvus calls; each gets what it would get
    alone (its exclusions dropped, its top k); a genre filter or a long exclusion list
    is searched alone."""
    uri, batch = loaded
    rng = np.random.default_rng(3)
    queries = [normalize(rng.normal(size=DIM)) for _ in range(12)]
    excludes = [tuple(int(i) for i in rng.choice(N, size=s, replace=False) + 1)
                for s in (0, 3, 8, 20, 0, 5, 1, 2, 30, 4, 0, 6)]
    top_ks = [10, 20, 5, 10, 1, 10, 15, 10, 10, 7, 10, 10]

    async def main():
        store = MilvusVectors(uri, timeout=10)
        searcher = BatchedSearch(store, max_batch=4, max_exclude=25)
        live = store.resolve("testmodel")
        before = _milvus_calls()
        try:
            found = await asyncio.gather(*(
                searcher.search(live, q.tolist(), k, Filters(e), 10)
                for q, k, e in zip(queries, top_ks, excludes, strict=True)))
            genre = await searcher.search(live, queries[0].tolist(), 5,
                                          Filters(genres=("Comedy",)), 10)
            return found, genre, _milvus_calls() - before
        finally:
            await store.aclose()
    found, genre, calls = asyncio.run(main())
    for hits, q, k, e in zip(found, queries, top_ks, excludes, strict=True):
        assert [i for i, _ in hits] == _brute(batch, q, k, e)
        assert all(abs(s - float(batch.vectors[i - 1] @ q)) < 1e-4 for i, s in hits)
    # 11 batchable searches, at most 4 per call (the 30-id exclusion goes alone), + genre
    assert calls == 1 + 3 + 1
    comedy = [i for i in range(N) if "Comedy" in batch.genres[i]]
    expected = sorted(comedy, key=lambda i: -float(batch.vectors[i] @ queries[0]))[:5]
    assert [i for i, _ in genre] == [i + 1 for i in expected]


def test_a_failed_batch_fails_each_search_and_a_caller_may_give_up(loaded) -> None:
    uri, batch = loaded
    missing = ModelCollection("testmodel", "v0", "mr_testmodel_missing_0", DIM, N, "FLAT")

    async def main():
        store = MilvusVectors(uri, timeout=10)
        searcher = BatchedSearch(store, max_batch=8)
        live = store.resolve("testmodel")
        try:
            failed = await asyncio.gather(*(
                searcher.search(missing, batch.vectors[i].tolist(), 5, Filters(), 5)
                for i in range(3)), return_exceptions=True)
            impatient = asyncio.ensure_future(
                searcher.search(live, batch.vectors[1].tolist(), 5, Filters(), 5))
            patient = asyncio.ensure_future(
                searcher.search(live, batch.vectors[2].tolist(), 5, Filters((3,)), 5))
            await asyncio.sleep(0)
            impatient.cancel()
            return failed, await patient, impatient.cancelled()
        finally:
            await store.aclose()
    failed, patient, cancelled = asyncio.run(main())
    assert all(isinstance(f, Exception) for f in failed) and len(failed) == 3
    assert cancelled
    assert [i for i, _ in patient] == _brute(batch, batch.vectors[2], 5, (3,))


async def _from_memory(stub, request: pb.SearchRequest) -> pb.SearchResponse:
    """The answer once the collection is held in memory (the first search starts the load)."""
    before = MEMORY_SEARCHES._value.get()
    deadline = time.monotonic() + 20
    while True:
        reply = await stub.Search(request, timeout=5)
        if MEMORY_SEARCHES._value.get() > before or time.monotonic() > deadline:
            assert MEMORY_SEARCHES._value.get() > before, "never answered from memory"
            return reply
        await asyncio.sleep(0.1)


def test_small_collections_are_searched_in_memory_with_milvus_answers(explained) -> None:
    """The copy in memory answers what Milvus' exact search answers: order, filters,
    exclusions, reasons, readings, a movie's own vector, stored vectors."""
    uri, batch = explained
    query = batch.vectors[40]
    weights = np.linspace(1, -1, DIM).astype(np.float32)
    requests = [
        pb.SearchRequest(model="explained", vector=query.tolist(), top_k=15),
        pb.SearchRequest(model="explained", vector=query.tolist(), top_k=12,
                         exclude_ids=list(range(2, 120, 3)), genres=["Comedy", "Drama"],
                         years=common_pb2.YearRange(min_year=1955, max_year=1990),
                         liked_ids=list(range(1, N, 4)),
                         reading=common_pb2.Reading(vector=weights.tolist(), offset=2.5,
                                                    low=1, high=5)),
        pb.SearchRequest(model="explained", like_movie_id=9, top_k=6),
        pb.SearchRequest(model="explained", vector=query.tolist(), top_k=5,
                         genres=["Western"]),   # no movie of the test collection
    ]

    def answers(reply: pb.SearchResponse) -> list[tuple]:
        return [(h.movie_id, round(h.score, 4), h.reason_movie_id,
                 round(h.reading, 4) if h.HasField("reading") else None) for h in reply.hits]

    async def milvus(stub):
        return [answers(await stub.Search(r, timeout=5)) for r in requests]

    async def memory(stub):
        await _from_memory(stub, requests[0])
        vectors = await stub.GetVectors(pb.GetVectorsRequest(model="explained",
                                                             movie_ids=[3, N + 5]), timeout=5)
        return [answers(await stub.Search(r, timeout=5)) for r in requests], vectors
    expected = run(uri, milvus)
    got, vectors = run(uri, memory, memory_below=10_000)
    assert got == expected
    assert expected[1] and expected[3] == []          # the filters left something, or nothing
    assert [v.movie_id for v in vectors.vectors] == [3] and list(vectors.missing_ids) == [N + 5]
    assert np.allclose(vectors.vectors[0].vector, batch.vectors[2], atol=1e-6)


def test_a_new_version_is_searched_in_memory_once_loaded(milvus_any: str) -> None:
    first, second = items(21), items(22)
    load(milvus_any, "swapped", "s1", first)

    async def scenario(stub):
        request = pb.SearchRequest(model="swapped", vector=first.vectors[0].tolist(), top_k=3)
        before = await _from_memory(stub, request)
        await asyncio.to_thread(load, milvus_any, "swapped", "s2", second)
        deadline = time.monotonic() + 20
        while (await stub.Search(request, timeout=5)).model_version != "s2":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        return before, await _from_memory(stub, request)
    before, after = run(milvus_any, scenario, memory_below=10_000, registry_ttl=0.1)
    query = first.vectors[0]
    assert [h.movie_id for h in before.hits] == (np.argsort(-(first.vectors @ query))[:3]
                                                 + 1).tolist()
    assert after.model_version == "s2"
    assert [h.movie_id for h in after.hits] == (np.argsort(-(second.vectors @ query))[:3]
                                                + 1).tolist()


@pytest.mark.parametrize("memory_below", [0, 10_000])
def test_an_added_movie_is_searchable_at_once(milvus_any: str, memory_below: int) -> None:
    """UpsertVectors writes into the live collection (and its copy in memory): the next
    search can return the movie, with its genre; a stale version or width is refused."""
    batch = items(31)
    batch = ItemBatch(batch.ids, batch.vectors, batch.years, batch.genres, reasons_table(N))
    model = f"grown{memory_below}"
    load(milvus_any, model, "g1", batch)
    new_vector = normalize(batch.vectors[:1] * -1.0 + 0.01)[0]

    async def scenario(stub):
        if memory_below:
            await _from_memory(stub, pb.SearchRequest(model=model, vector=[0.1] * DIM))
        added = await stub.UpsertVectors(pb.UpsertVectorsRequest(
            model=model, model_version="g1", rows=[pb.MovieRow(
                movie_id=N + 7, vector=new_vector.tolist(), year=2020, genres=["Western"])]),
            timeout=10)
        found = await stub.Search(pb.SearchRequest(model=model, vector=new_vector.tolist(),
                                                   top_k=1, genres=["Western"],
                                                   liked_ids=[1, 2]), timeout=5)
        stale = await _error(stub.UpsertVectors(pb.UpsertVectorsRequest(
            model=model, model_version="g0", rows=[pb.MovieRow(movie_id=N + 8,
                                                               vector=[0.1] * DIM)]), timeout=5))
        narrow = await _error(stub.UpsertVectors(pb.UpsertVectorsRequest(
            model=model, model_version="g1", rows=[pb.MovieRow(movie_id=N + 8,
                                                               vector=[0.1] * 3)]), timeout=5))
        return added, found, stale, narrow
    added, found, stale, narrow = run(milvus_any, scenario, memory_below=memory_below)
    assert (added.model_version, added.count) == ("g1", 1)
    assert [h.movie_id for h in found.hits] == [N + 7]
    assert found.hits[0].reason_movie_id == 0          # nothing is co-liked with it yet
    assert stale[0].name == "FAILED_PRECONDITION" and narrow[0].name == "FAILED_PRECONDITION"


@pytest.mark.parametrize("memory_below", [0, 10_000])
def test_the_previous_version_answers_its_own_queries_after_a_promotion(
        milvus_any: str, memory_below: int) -> None:
    """While the embedders switch to a promoted version, queries made with the previous
    one are answered from its retained collection (never FAILED_PRECONDITION); a version
    no longer kept is refused."""
    model = f"promoted{memory_below}"
    old, new = items(41), items(42)
    load(milvus_any, model, "p1", old)
    load(milvus_any, model, "p2", new)
    query = old.vectors[3]

    async def scenario(stub):
        ask = lambda version: stub.Search(pb.SearchRequest(  # noqa: E731
            model=model, vector=query.tolist(), top_k=4, model_version=version), timeout=5)
        return await ask("p1"), await ask("p2"), await _error(ask("p0"))
    previous, live, gone = run(milvus_any, scenario, memory_below=memory_below)
    assert previous.model_version == "p1" and live.model_version == "p2"
    assert [h.movie_id for h in previous.hits] == (np.argsort(-(old.vectors @ query))[:4]
                                                   + 1).tolist()
    assert [h.movie_id for h in live.hits] == (np.argsort(-(new.vectors @ query))[:4]
                                               + 1).tolist()
    assert gone[0].name == "FAILED_PRECONDITION"


def test_a_row_written_while_the_copy_is_read_is_in_the_copy() -> None:
    """An UpsertVectors that lands while the retriever reads a collection into memory
    (the rows may have been read before the write) is applied to the copy."""
    import threading

    from movierec.services.retriever.memory import MemoryCollections

    release, rows = threading.Event(), [{"id": i, "vector": [float(i), 1.0], "year": 1990,
                                         "genres": ["Drama"]} for i in (1, 2)]

    class Iterator:
        def __init__(self) -> None:
            self.pages = [rows]

        def next(self):
            release.wait(5)
            return self.pages.pop() if self.pages else []

        def close(self) -> None:
            pass

    class Client:
        def query_iterator(self, *args, **kwargs):
            return Iterator()

    class Store:
        client, timeout = Client(), 1.0

    live = ModelCollection("m", "v1", "c1", 2, 2, "FLAT")
    memory = MemoryCollections(Store(), max_count=10)

    async def scenario():
        assert memory.get(live) is None                  # the load begins
        await asyncio.sleep(0.05)
        memory.upsert("c1", [{"id": 3, "vector": [9.0, 1.0], "year": 2020,
                              "genres": ["unknown"]}])
        release.set()
        for _ in range(100):
            if memory.get(live) is not None:
                return memory.get(live)
            await asyncio.sleep(0.02)
    copy = asyncio.run(scenario())
    assert copy is not None and copy.ids.tolist() == [1, 2, 3]
    assert copy.search([1.0, 0.0], 1, Filters(genres=("unknown",))) == [(3, 9.0)]


def test_the_retriever_exports_the_version_it_serves(loaded) -> None:
    """movierec_model_live_info{service="retriever"}: the live collection's version, what
    the dashboard compares with the embedder's."""
    from prometheus_client import REGISTRY

    uri, batch = loaded

    async def scenario(stub):
        return await stub.Search(pb.SearchRequest(model="testmodel", top_k=3,
                                                  vector=batch.vectors[3].tolist()), timeout=5)
    assert run(uri, scenario).model_version == "v1"
    assert REGISTRY.get_sample_value("movierec_model_live_info", {
        "service": "retriever", "model": "testmodel", "version": "v1"}) == 1


def test_a_store_call_cancelled_as_its_answer_arrives_stays_cancelled() -> None:
    """Stopping the retriever cancels its background loops; a Milvus call whose answer
    arrives in the same loop step must still end them (Python 3.11's ``wait_for``
    returned the answer instead, and the keep-warm loop outlived the server's stop)."""
    engine = SearchEngine(MilvusVectors("http://127.0.0.1:1"))

    async def scenario() -> asyncio.Task:
        answer = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(engine._await(answer, "probe", 5))
        await asyncio.sleep(0)            # the call waits for its answer
        answer.set_result(True)
        task.cancel()
        await asyncio.wait({task})
        return task
    assert asyncio.run(scenario()).cancelled()
