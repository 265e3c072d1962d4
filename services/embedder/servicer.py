"""gRPC servicer of ``movierec.embedder.v1.Embedder``.

Profiles go through the fusion user tower, liked lists and user histories through
PinSage's aggregation of item vectors. A known user's history comes from the catalog;
a user without history falls back to their profile (fusion), which the response says.
"""

from __future__ import annotations

import grpc
import numpy as np

from movierec import validation
from movierec.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from movierec.embedder.v1 import embedder_pb2 as pb
from movierec.embedder.v1 import embedder_pb2_grpc
from movierec.errors import InvalidArgument
from movierec.models.fusion.inference import Profile
from movierec.server import client
from movierec.server.budget import call_budget
from services.embedder.models import Loaded, ModelSet

MAX_BATCH = 256
MAX_LIKED = 1000
AGE_BUCKET_YEARS = {1: 16, 18: 21, 25: 30, 35: 40, 45: 47, 50: 53, 56: 60}


def embedding(loaded: Loaded, vector: np.ndarray) -> pb.Embedding:
    scale = getattr(loaded.encoder, "scale", 1.0)
    offset = getattr(loaded.encoder, "offset", 0.0)
    return pb.Embedding(model=loaded.model, model_version=loaded.version,
                        vector=np.asarray(vector, dtype=np.float32).tolist(),
                        score_scale=float(scale), score_offset=float(offset))


def profile_of(message) -> Profile:
    user_id = message.user_id if message.HasField("user_id") else None
    return Profile(message.age, message.gender, message.occupation, user_id)


def liked_of(message) -> tuple[list[int], list[float] | None]:
    ids = validation.id_list("liked.movie_ids", message.movie_ids, MAX_LIKED,
                             allow_empty=False)
    weights = list(message.weights) or None
    if weights is not None and len(weights) != len(ids):
        raise InvalidArgument("liked.weights", "give one weight per movie id or none")
    return ids, weights


class EmbedderServicer(embedder_pb2_grpc.EmbedderServicer):
    def __init__(self, models: ModelSet, catalog: catalog_pb2_grpc.CatalogStub | None,
                 call_timeout: float, history_limit: int) -> None:
        self.models = models
        self.catalog = catalog
        self.call_timeout = call_timeout
        self.history_limit = history_limit

    def _profiles(self, profiles) -> pb.EmbedProfilesResponse:
        fusion = self.models.get("fusion")
        vectors = fusion.encoder.encode([profile_of(p) for p in profiles])
        return [embedding(fusion, v) for v in vectors]

    async def EmbedProfile(self, request, context):  # noqa: N802
        return pb.EmbedProfileResponse(embedding=self._profiles([request.profile])[0])

    async def EmbedProfiles(self, request, context):  # noqa: N802
        if len(request.profiles) > MAX_BATCH:
            raise InvalidArgument("profiles", f"at most {MAX_BATCH} per batch")
        return pb.EmbedProfilesResponse(embeddings=self._profiles(request.profiles))

    def _liked(self, liked) -> pb.Embedding:
        pinsage = self.models.get("pinsage")
        ids, weights = liked_of(liked)
        return embedding(pinsage, pinsage.encoder.embed_liked(ids, weights))

    async def EmbedLikedMovies(self, request, context):  # noqa: N802
        return pb.EmbedLikedMoviesResponse(embedding=self._liked(request.liked))

    async def EmbedLikedMoviesBatch(self, request, context):  # noqa: N802
        if len(request.liked) > MAX_BATCH:
            raise InvalidArgument("liked", f"at most {MAX_BATCH} per batch")
        return pb.EmbedLikedMoviesBatchResponse(embeddings=[self._liked(x) for x in request.liked])

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        return call_budget(context, self.call_timeout)

    async def EmbedUser(self, request, context):  # noqa: N802
        user_id = validation.positive_id("user_id", request.user_id)
        if self.catalog is None:
            raise InvalidArgument("user_id", "this embedder has no catalog to read users from")
        timeout = self._timeout(context)
        history = await client.call(self.catalog.GetUserHistory, catalog_pb2.GetUserHistoryRequest(
            user_id=user_id, limit=self.history_limit), timeout=timeout, target="catalog",
            idempotent=True)
        if history.ratings:
            pinsage = self.models.get("pinsage")
            ids = [r.movie_id for r in history.ratings]
            vector = pinsage.encoder.embed_history(ids, [r.rating for r in history.ratings])
            return pb.EmbedUserResponse(embedding=embedding(pinsage, vector), source="history",
                                        history_movie_ids=ids)
        user = (await client.call(self.catalog.GetUser, catalog_pb2.GetUserRequest(
            user_id=user_id), timeout=timeout, target="catalog", idempotent=True)).user
        if not user.gender or not user.age:
            return pb.EmbedUserResponse(source="none")
        profile = Profile(AGE_BUCKET_YEARS.get(user.age, 30), user.gender, user.occupation,
                          user_id)
        fusion = self.models.get("fusion")
        vector = fusion.encoder.encode([profile])[0]
        return pb.EmbedUserResponse(embedding=embedding(fusion, vector), source="profile")

    async def GetModelInfo(self, request, context):  # noqa: N802
        return pb.GetModelInfoResponse(models=[
            pb.ModelInfo(model=m.model, version=m.version, dim=m.dim, artifact=str(m.path))
            for m in self.models.current.values()])
