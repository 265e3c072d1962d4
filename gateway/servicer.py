"""gRPC servicer of ``movierec.gateway.v1.Gateway``, the public API.

Validates and normalizes requests, serves ``Recommend``/``SimilarMovies`` from the
Redis cache when it can (single-flight on misses), runs the pipeline otherwise,
passes ``SearchMovies`` through and writes ``RecordRating`` through the catalog,
then drops that user's cached answers.
"""

from __future__ import annotations

import grpc

from gateway.backends import Backends, Deadline, ModelVersions
from gateway.cache import Cache, cache_key
from gateway.recommend import Query, Recommender, similar
from movierec import paging, validation
from movierec.catalog.v1 import catalog_pb2
from movierec.errors import InvalidArgument
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.gateway.v1 import gateway_pb2_grpc

MAX_TOP_K = 100
MAX_LIKED = 500
MODELS = ("pinsage", "fusion")


def _check_profile(profile) -> None:
    if not 1 <= profile.age <= 120:
        raise InvalidArgument("profile.age", f"must be 1-120 years, got {profile.age}")
    if profile.gender not in ("M", "F"):
        raise InvalidArgument("profile.gender", "must be 'M' or 'F'")
    if not 0 <= profile.occupation <= 20:
        raise InvalidArgument("profile.occupation", f"must be 0-20, got {profile.occupation}")
    if profile.HasField("user_id"):
        validation.positive_id("profile.user_id", profile.user_id)


def normalize(request: pb.RecommendRequest) -> tuple[Query, bytes, str]:
    """The validated query, the canonical bytes that identify it (page excluded) and
    their fingerprint, which binds page tokens to the request."""
    kind = request.WhichOneof("query")
    top_k = validation.limit("top_k", request.top_k, 10, MAX_TOP_K)
    genres = tuple(sorted(set(validation.text_list("genres", request.genres))))
    exclude = tuple(sorted(set(validation.id_list("exclude_movie_ids",
                                                  request.exclude_movie_ids, 10_000))))
    fields = {"top_k": top_k, "genres": genres, "exclude": exclude,
              "exclude_seen": request.exclude_seen}
    if kind == "profile":
        _check_profile(request.profile)
        user_id = request.profile.user_id if request.profile.HasField("user_id") else None
        fields.update(profile=request.profile, user_id=user_id)
    elif kind == "liked":
        liked = validation.id_list("liked.movie_ids", request.liked.movie_ids, MAX_LIKED,
                                   allow_empty=False)
        if request.liked.weights and len(request.liked.weights) != len(liked):
            raise InvalidArgument("liked.weights", "give one weight per movie id or none")
        fields.update(liked=tuple(liked), weights=tuple(request.liked.weights))
    elif kind == "user_id":
        fields.update(user_id=validation.positive_id("user_id", request.user_id))
        kind = "user"
    else:
        raise InvalidArgument("query", "set one of profile, liked or user_id")
    if request.exclude_seen and fields.get("user_id") is None:
        raise InvalidArgument("exclude_seen", "needs a user id (user_id or profile.user_id)")
    canonical = pb.RecommendRequest()
    canonical.CopyFrom(request)
    canonical.page_token = ""
    canonical.top_k = top_k
    del canonical.genres[:]
    canonical.genres.extend(genres)
    del canonical.exclude_movie_ids[:]
    canonical.exclude_movie_ids.extend(exclude)
    payload = canonical.SerializeToString(deterministic=True)
    print_ = paging.fingerprint(payload.hex())
    offset = paging.decode(request.page_token, print_)
    return Query(kind=kind, offset=offset, **fields), payload, print_


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, backends: Backends, cache: Cache, versions: ModelVersions,
                 call_timeout: float) -> None:
        self.b = backends
        self.cache = cache
        self.versions = versions
        self.call_timeout = call_timeout
        self.recommender = Recommender(backends)

    def _deadline(self, context: grpc.aio.ServicerContext) -> Deadline:
        return Deadline.start(context.time_remaining(), self.call_timeout)

    async def _cached(self, kind: str, payload: bytes, user_id: int | None, compute):
        key = cache_key(kind, payload, self.versions.value)
        hit = await self.cache.get(key)
        if hit is not None:
            return hit, True

        async def run() -> bytes:
            value = (await compute()).SerializeToString()
            await self.cache.put(key, value, user_id)
            return value
        return await self.cache.single_flight(key, run), False

    async def Recommend(self, request, context):  # noqa: N802
        query, canonical, print_ = normalize(request)
        deadline = self._deadline(context)

        async def compute() -> pb.RecommendResponse:
            ranking = await self.recommender.rank(query, deadline)
            items, more = await self.recommender.explain(ranking, query.offset, query.top_k,
                                                         deadline)
            token = paging.encode(query.offset + query.top_k, print_) if more else ""
            return pb.RecommendResponse(items=items, next_page_token=token,
                                        model_version=f"{ranking.model}@{ranking.version}"
                                        if ranking.version else ranking.model)
        payload = canonical + query.offset.to_bytes(4, "big")
        data, hit = await self._cached("rec", payload, query.user_id, compute)
        response = pb.RecommendResponse.FromString(data)
        response.cached = hit
        return response

    async def SimilarMovies(self, request, context):  # noqa: N802
        movie_id = validation.positive_id("movie_id", request.movie_id)
        top_k = validation.limit("top_k", request.top_k, 10, MAX_TOP_K)
        genres = tuple(sorted(set(validation.text_list("genres", request.genres))))
        model = request.model or "pinsage"
        if model not in MODELS:
            raise InvalidArgument("model", f"must be one of {', '.join(MODELS)}")
        deadline = self._deadline(context)

        async def compute() -> pb.SimilarMoviesResponse:
            ranking = await similar(self.b, model, movie_id, top_k, genres, deadline)
            items, _ = await self.recommender.explain(ranking, 0, top_k, deadline)
            return pb.SimilarMoviesResponse(items=items,
                                            model_version=f"{model}@{ranking.version}")
        payload = f"{movie_id}|{top_k}|{','.join(genres)}|{model}".encode()
        data, hit = await self._cached("sim", payload, None, compute)
        response = pb.SimilarMoviesResponse.FromString(data)
        response.cached = hit
        return response

    async def SearchMovies(self, request, context):  # noqa: N802
        reply = await self.b.read(self.b.catalog.SearchMovies, catalog_pb2.SearchMoviesRequest(
            query=request.query, genres=request.genres, years=request.years,
            limit=request.limit, page_token=request.page_token), self._deadline(context),
            "catalog")
        return pb.SearchMoviesResponse(movies=[m.movie for m in reply.movies],
                                       next_page_token=reply.next_page_token)

    async def RecordRating(self, request, context):  # noqa: N802
        user_id = validation.positive_id("user_id", request.user_id)
        reply = await self.b.write(self.b.catalog.RecordRating, catalog_pb2.RecordRatingRequest(
            user_id=user_id, movie_id=request.movie_id, rating=request.rating),
            self._deadline(context), "catalog")
        await self.cache.invalidate_user(user_id)
        r = reply.rating
        return pb.RecordRatingResponse(user_id=r.user_id, movie_id=r.movie_id, rating=r.rating,
                                       timestamp=r.timestamp)
