"""The embedder's model set: newer artifacts are swapped in, broken ones never replace a
working model."""

from __future__ import annotations

import shutil
from pathlib import Path

from stack_fixture import Stack

from movierec.models import registry
from movierec.services.embedder.models import ModelSet


def test_a_broken_newer_artifact_keeps_the_loaded_model(stack: Stack, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    shutil.copytree(stack.env["MOVIEREC_ARTIFACTS"], root)
    models = ModelSet(root)
    assert sorted(models.reload()) and models.ready
    before = {name: loaded.version for name, loaded in models.current.items()}
    for name in registry.NAMES:
        broken = root / name / "29990101T000000Z"
        shutil.copytree(models.current[name].path, broken)
        for array in ("item_vectors.npy", "user_tower.npz"):
            if (broken / array).exists():
                (broken / array).write_bytes(b"PK\x03\x04 truncated")
        (root / name / "LATEST").write_text(broken.name + "\n")
    assert models.reload() == []
    assert {n: loaded.version for n, loaded in models.current.items()} == before
    assert models.ready


def test_a_new_movie_gets_a_vector_in_every_models_space(stack: Stack) -> None:
    """EmbedMovies applies each loaded artifact's content map (movierec/models/content.py)
    to a movie no model trained on; a movie without a title is INVALID_ARGUMENT."""
    import asyncio

    import grpc
    import numpy as np

    from movierec.common.v1 import common_pb2
    from movierec.embedder.v1 import embedder_pb2, embedder_pb2_grpc
    from movierec.models.artifact import latest
    from movierec.models.content import ContentMap

    movie = common_pb2.Movie(movie_id=9001, title="Moon Harbor 2", year=1999,
                             genres=["Comedy", "Drama"])

    async def ask():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.env['EMBEDDER_PORT']}") as c:
            stub = embedder_pb2_grpc.EmbedderStub(c)
            reply = await stub.EmbedMovies(embedder_pb2.EmbedMoviesRequest(movies=[movie]),
                                           timeout=5)
            try:
                await stub.EmbedMovies(embedder_pb2.EmbedMoviesRequest(
                    movies=[common_pb2.Movie(movie_id=9002, title=" ")]), timeout=5)
            except grpc.aio.AioRpcError as exc:
                return reply, exc.code()
            return reply, None
    reply, bad = asyncio.run(ask())
    assert bad == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(e.model for e in reply.embeddings) == sorted(registry.NAMES)
    for embedding in reply.embeddings:
        path = latest(embedding.model, Path(stack.env["MOVIEREC_ARTIFACTS"]))
        assert embedding.model_version == path.name and embedding.movie_id == 9001
        expected = ContentMap.load(path).vectors([("Moon Harbor 2", 1999, ("Comedy", "Drama"))])
        assert np.allclose(embedding.vector, expected[0], atol=1e-5)


def test_a_history_asked_for_what_comes_next_is_read_in_time_order(stack: Stack) -> None:
    """EmbedHistory with purpose NEXT: the registry's sequence model (SASRec) reads the
    ratings oldest first whatever order they arrive in; the same movies in another time
    order give another vector; a movie the model never saw is left out of
    ``used_movie_ids``; without a purpose the history model (PinSage) answers."""
    import asyncio

    import grpc
    import numpy as np

    from movierec.common.v1 import common_pb2
    from movierec.embedder.v1 import embedder_pb2, embedder_pb2_grpc
    from movierec.models.artifact import latest

    model = registry.for_input("sequence").name
    root = Path(stack.env["MOVIEREC_ARTIFACTS"])
    encoder = registry.encoder_class(model).load(latest(model, root))
    movies = [int(m) for m in encoder.movie_ids[:4]]

    def request(times):
        return embedder_pb2.EmbedHistoryRequest(history=common_pb2.RatedMovies(
            movie_ids=[*movies, 999_999], ratings=[5, 4, 3, 2, 1], timestamps=[*times, 50]),
            purpose=embedder_pb2.HISTORY_PURPOSE_NEXT)

    async def ask():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.env['EMBEDDER_PORT']}") as c:
            stub = embedder_pb2_grpc.EmbedderStub(c)
            taste = request((10, 20, 30, 40))
            taste.ClearField("purpose")
            return [await stub.EmbedHistory(r, timeout=5) for r in (
                request((10, 20, 30, 40)), request((40, 30, 20, 10)), taste,
                request((10, 11, 12, 10 ** 6)))]
    forward, backward, taste, later = asyncio.run(ask())
    assert taste.embedding.model == registry.for_input("history").name != model
    assert forward.embedding.model == model
    assert list(forward.used_movie_ids) == movies[::-1]           # newest first
    times = [10, 20, 30, 40]
    np.testing.assert_allclose(forward.embedding.vector,
                               encoder.embed_sequence(movies, times), atol=1e-5)
    np.testing.assert_allclose(backward.embedding.vector,
                               encoder.embed_sequence(movies[::-1], times), atol=1e-5)
    assert not np.allclose(forward.embedding.vector, backward.embedding.vector, atol=1e-4)
    # the times between ratings are read too (the model's gap table)
    np.testing.assert_allclose(later.embedding.vector,
                               encoder.embed_sequence(movies, [10, 11, 12, 10 ** 6]),
                               atol=1e-5)
    assert not np.allclose(later.embedding.vector, forward.embedding.vector, atol=1e-4)


def test_the_live_version_of_each_model_is_exported(stack: Stack, tmp_path: Path) -> None:
    """movierec_model_live_info{service="embedder", model, version} is 1 for the version
    in use, and a swap drops the old version's series (the dashboard's model panel)."""
    from prometheus_client import REGISTRY

    def shown(model: str, version: str):
        return REGISTRY.get_sample_value("movierec_model_live_info", {
            "service": "embedder", "model": model, "version": version})

    root = tmp_path / "artifacts"
    shutil.copytree(stack.env["MOVIEREC_ARTIFACTS"], root)
    models = ModelSet(root)
    models.reload()
    old = models.current["fusion"]
    assert all(shown(m, loaded.version) == 1 for m, loaded in models.current.items())
    newer = root / "fusion" / "29990101T000000Z"
    shutil.copytree(old.path, newer)
    meta = (newer / "metadata.json").read_text().replace(old.version, newer.name)
    (newer / "metadata.json").write_text(meta)
    (root / "fusion" / "LATEST").write_text(newer.name + "\n")
    assert models.reload() == [f"fusion@{newer.name}"]
    assert shown("fusion", newer.name) == 1 and shown("fusion", old.version) is None
