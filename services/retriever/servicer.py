"""gRPC servicer of ``movierec.retriever.v1.Retriever``: validation and translation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
import numpy as np

from movierec import limits, validation
from movierec.errors import FailedPrecondition, InvalidArgument, NotFound
from movierec.retriever.v1 import retriever_pb2 as pb
from movierec.retriever.v1 import retriever_pb2_grpc
from movierec.server.budget import call_budget
from movierec.services.retriever import blend
from movierec.services.retriever.engine import SearchEngine
from movierec.services.retriever.facts import Explained, Reading
from movierec.services.retriever.milvus import Filters
from movierec.services.retriever.records import ModelCollection, check_model


@dataclass(frozen=True)
class Consistency:
    """A check that a collection is in the query vector's space: the embedder's
    ``version`` (when given) and the vector's dimension must match it. The engine
    answers from the live collection, or from a retained one of ``version`` (the
    previous version, while the embedders switch to a newly promoted one)."""

    dim: int
    version: str = ""

    def __call__(self, live: ModelCollection) -> None:
        if self.version and self.version != live.version:
            raise FailedPrecondition(
                f"model {live.model!r}: the query vector comes from version {self.version} "
                f"but the retriever serves version {live.version}; load the embedder's "
                "version (movierec load vectors) or let the embedder reload")
        if self.dim != live.dim:
            raise FailedPrecondition(
                f"model {live.model!r}: the query vector has {self.dim} dimensions but the "
                f"live version {live.version} has {live.dim}; the embedder and the loaded "
                "vectors disagree")



def reading_of(request, dim: int) -> Reading | None:
    """The request's reading (None when it has none); INVALID_ARGUMENT when malformed."""
    if not request.HasField("reading") or not request.reading.vector:
        return None
    weights = validation.finite_vector("reading.vector", request.reading.vector, dim)
    values = (request.reading.offset, request.reading.low, request.reading.high)
    if not all(math.isfinite(v) for v in values) or values[1] > values[2]:
        raise InvalidArgument("reading", "offset, low and high must be finite, low <= high")
    return Reading(np.asarray(weights, dtype=np.float32), *values)


def also_of(request) -> list[blend.Part]:
    """The request's extra query parts; INVALID_ARGUMENT when malformed or too many."""
    if len(request.also) + 1 > limits.MAX_QUERY_PARTS:
        raise InvalidArgument("also", f"at most {limits.MAX_QUERY_PARTS - 1} more parts")
    if request.like_movie_id:
        raise InvalidArgument("also", "a search by like_movie_id takes no more parts")
    parts = []
    for i, part in enumerate(request.also):
        model = check_model(part.model)
        vector = validation.finite_vector(f"also[{i}].vector", part.vector)
        parts.append(blend.Part(model, np.asarray(vector, np.float32),
                                Consistency(len(vector), part.model_version.strip()[:64])))
    return parts


def _hit(hit: Explained) -> pb.Hit:
    reply = pb.Hit(movie_id=hit.movie_id, score=hit.score, reason_movie_id=hit.reason)
    if hit.reading is not None:
        reply.reading = hit.reading
    return reply


class RetrieverServicer(retriever_pb2_grpc.RetrieverServicer):
    """Thin translation layer over :class:`SearchEngine`."""

    def __init__(self, engine: SearchEngine, call_timeout: float) -> None:
        self.engine = engine
        self.call_timeout = call_timeout

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        return call_budget(context, self.call_timeout)

    async def Search(self, request, context):  # noqa: N802
        model = check_model(request.model)
        top_k = validation.limit("top_k", request.top_k, 10, limits.MAX_RANK)
        exclude = validation.id_list("exclude_ids", request.exclude_ids, limits.MAX_EXCLUDE)
        liked = frozenset(validation.id_list("liked_ids", request.liked_ids,
                                             limits.MAX_EXCLUDE))
        genres = validation.genres("genres", request.genres)
        low, high = validation.year_range("years", request.years.min_year,
                                          request.years.max_year)
        timeout = self._timeout(context)
        vector = await self._query_vector(request, model, timeout)
        reading = reading_of(request, len(vector))
        if request.like_movie_id:
            exclude = [*exclude, request.like_movie_id]
        filters = Filters(tuple(dict.fromkeys(exclude)), tuple(genres), low, high)
        check = Consistency(len(vector), request.model_version.strip()[:64])
        if request.also:
            parts = [blend.Part(model, np.asarray(vector, np.float32), check), *also_of(request)]
            hits, live = await blend.search(self.engine, parts, top_k, filters, timeout)
        else:
            hits, live = await self.engine.search(model, vector, top_k, filters, timeout,
                                                  check)
        explained = await self.engine.explain(live, hits, liked, reading, timeout)
        return pb.SearchResponse(hits=[_hit(h) for h in explained], model_version=live.version)

    async def _query_vector(self, request, model: str, timeout: float) -> list[float]:
        """The request's vector, or the stored vector of ``like_movie_id``."""
        if not request.like_movie_id:
            return validation.finite_vector("vector", request.vector)
        movie_id = validation.positive_id("like_movie_id", request.like_movie_id)
        if request.vector:
            raise InvalidArgument("vector", "give a vector or like_movie_id, not both")
        found, live = await self.engine.vectors(model, [movie_id], timeout)
        if movie_id not in found:
            raise NotFound(f"movie {movie_id} has no {model} vector in version {live.version}")
        return found[movie_id].tolist()

    async def GetVectors(self, request, context):  # noqa: N802
        model = check_model(request.model)
        ids = validation.id_list("movie_ids", request.movie_ids, limits.MAX_BATCH_IDS)
        found, live = await self.engine.vectors(model, list(dict.fromkeys(ids)),
                                                self._timeout(context))
        return pb.GetVectorsResponse(
            vectors=[pb.MovieVector(movie_id=i, vector=found[i].tolist()) for i in ids
                     if i in found],
            missing_ids=[i for i in dict.fromkeys(ids) if i not in found],
            model_version=live.version)

    async def UpsertVectors(self, request, context):  # noqa: N802
        model = check_model(request.model)
        if not request.rows or len(request.rows) > limits.MAX_BATCH_IDS:
            raise InvalidArgument("rows", f"give 1-{limits.MAX_BATCH_IDS} rows")
        rows = [{"id": validation.positive_id(f"rows[{i}].movie_id", row.movie_id),
                 "vector": validation.finite_vector(f"rows[{i}].vector", row.vector),
                 "year": row.year, "genres": list(validation.genres(f"rows[{i}].genres",
                                                                    row.genres))}
                for i, row in enumerate(request.rows)]
        version = validation.text("model_version", request.model_version, 64, required=True)
        live = await self.engine.upsert(model, version, rows, self._timeout(context))
        return pb.UpsertVectorsResponse(model_version=live.version, count=len(rows))

    async def DescribeModel(self, request, context):  # noqa: N802
        live = await self.engine.describe(check_model(request.model), self._timeout(context))
        return pb.DescribeModelResponse(model=live.model, version=live.version, dim=live.dim,
                                        count=live.count, index_type=live.index_type,
                                        metric=live.metric, collection=live.collection)
