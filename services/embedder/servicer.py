"""gRPC servicer of ``movierec.embedder.v1.Embedder``: query vectors, nothing else.

Each input goes to the model the registry names for it (:mod:`movierec.models.registry`):
profiles through the fusion user tower, liked lists and a known user's rated history
(which the gateway reads from the catalog and passes in, newest first) through PinSage's
aggregation of item vectors, and the same history asked for what comes next
(``purpose`` NEXT) through SASRec in time order. The embedder calls no other service.
Each model call is an ``embedder.model`` span when tracing is on (:mod:`movierec.tracing`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np

from movierec import limits, tracing, validation
from movierec.common.v1 import common_pb2
from movierec.embedder.v1 import embedder_pb2 as pb
from movierec.embedder.v1 import embedder_pb2_grpc
from movierec.errors import InvalidArgument, NotFound
from movierec.models import onboarding, registry
from movierec.models.fusion.inference import Profile
from movierec.models.user_input import History, embed_user_history
from movierec.services.embedder.models import Loaded, ModelSet


def embedding(loaded: Loaded, vector: np.ndarray) -> pb.Embedding:
    """The query vector and, for a model whose score reads as something (fusion's stars),
    how to read it (:meth:`FusionEncoder.reading`)."""
    reply = pb.Embedding(model=loaded.model, model_version=loaded.version,
                         vector=np.asarray(vector, dtype=np.float32).tolist())
    if hasattr(loaded.encoder, "reading"):
        weights, offset, low, high = loaded.encoder.reading(vector)
        reply.reading.CopyFrom(common_pb2.Reading(vector=weights.tolist(), offset=offset,
                                                  low=low, high=high))
    return reply


def model_span(loaded: Loaded, kind: str) -> AbstractContextManager:
    """The span of one model call (no library instruments the encoders)."""
    return tracing.span("embedder.model", {"movierec.model": loaded.model,
                                           "movierec.model_version": loaded.version,
                                           "movierec.input": kind})


def profile_of(message) -> Profile:
    user_id = message.user_id if message.HasField("user_id") else None
    return Profile(message.age, message.gender, message.occupation, user_id)


def liked_of(message, allow_empty: bool = False) -> tuple[list[int], list[float] | None]:
    ids = validation.id_list("liked.movie_ids", message.movie_ids, limits.MAX_LIKED,
                             allow_empty=allow_empty)
    return ids, validation.weights("liked.weights", message.weights, len(ids))


def known_only(encoder, ids: list[int], weights: list[float] | None):
    """(known ids, their weights, unknown ids); INVALID_ARGUMENT when none is known or
    the known ones all weigh zero."""
    known = np.isin(np.asarray(ids, dtype=np.int64), encoder.movie_ids)
    if not known.any():
        raise InvalidArgument("liked.movie_ids", "none of these movie ids is known to the model")
    kept = [i for i, k in zip(ids, known, strict=True) if k]
    unknown = [i for i, k in zip(ids, known, strict=True) if not k]
    if weights is not None:
        weights = [w for w, k in zip(weights, known, strict=True) if k]
        if not any(weights):
            raise InvalidArgument("liked.weights", "the known movies all weigh zero")
    return kept, weights, unknown


def history_of(request: pb.EmbedHistoryRequest) -> History:
    """The request's ratings as arrays; INVALID_ARGUMENT for a malformed history."""
    rated = request.history
    history = History.of(rated.movie_ids, rated.ratings, rated.timestamps)
    count = len(history.movie_ids)
    if not count:
        raise InvalidArgument("history", "must not be empty")
    if count > limits.MAX_HISTORY:
        raise InvalidArgument("history", f"at most {limits.MAX_HISTORY} ratings")
    if len(history.ratings) != count or len(history.timestamps) != count:
        raise InvalidArgument("history", "give one rating and one timestamp per movie id")
    if not ((history.movie_ids > 0) & (history.movie_ids <= limits.MAX_ID)).all():
        raise InvalidArgument("history.movie_ids", f"must be between 1 and {limits.MAX_ID}")
    bad = ~((history.ratings >= validation.MIN_RATING)
            & (history.ratings <= validation.MAX_RATING))
    if bad.any():
        raise InvalidArgument("history.ratings",
                              validation.rating_problem(history.ratings[bad][0]))
    return history


def movies_of(request: pb.EmbedMoviesRequest) -> list:
    """The request's movies; INVALID_ARGUMENT for a missing id or title, or too many."""
    movies = list(request.movies)
    if not movies or len(movies) > limits.MAX_BATCH_IDS:
        raise InvalidArgument("movies", f"give 1-{limits.MAX_BATCH_IDS} movies")
    for i, movie in enumerate(movies):
        validation.positive_id(f"movies[{i}].movie_id", movie.movie_id)
        validation.text(f"movies[{i}].title", movie.title, required=True)
    return movies


class EmbedderServicer(embedder_pb2_grpc.EmbedderServicer):
    """Profiles, liked lists and rated histories to query vectors; no other service."""

    def __init__(self, models: ModelSet, history_limit: int) -> None:
        self.models = models
        self.history_limit = history_limit

    async def EmbedProfile(self, request, context):  # noqa: N802
        model = self.models.get(registry.for_input("profile").name)
        with model_span(model, "profile"):
            vector = model.encoder.encode([profile_of(request.profile)])[0]
        return pb.EmbedProfileResponse(embedding=embedding(model, vector))

    async def EmbedLikedMovies(self, request, context):  # noqa: N802
        model = self.models.get(registry.for_input("liked").name)
        ids, weights, unknown = known_only(model.encoder, *liked_of(request.liked))
        with model_span(model, "liked"):
            vector = model.encoder.embed_liked(ids, weights)
        return pb.EmbedLikedMoviesResponse(embedding=embedding(model, vector),
                                           unknown_movie_ids=unknown)

    async def EmbedOnboarding(self, request, context):  # noqa: N802
        profile_model = self.models.get(onboarding.PROFILE_MODEL)
        with model_span(profile_model, "profile"):
            profile = profile_model.encoder.encode([profile_of(request.profile)])[0]
        ids, weights = liked_of(request.liked, allow_empty=True)
        if not ids:
            return pb.EmbedOnboardingResponse(parts=[embedding(profile_model, profile)])
        liked_model = self.models.get(onboarding.LIKED_MODEL)
        ids, weights, unknown = known_only(liked_model.encoder, ids, weights)
        with model_span(liked_model, "liked"):
            liked = liked_model.encoder.embed_liked(ids, weights)
        parts = onboarding.query_parts(profile, liked, len(ids), profile_model.spread,
                                       liked_model.spread)
        return pb.EmbedOnboardingResponse(
            parts=[embedding(profile_model, parts[onboarding.PROFILE_MODEL]),
                   embedding(liked_model, parts[onboarding.LIKED_MODEL])],
            unknown_movie_ids=unknown)

    async def EmbedHistory(self, request, context):  # noqa: N802
        kind = "sequence" if request.purpose == pb.HISTORY_PURPOSE_NEXT else "history"
        model = self.models.get(registry.for_input(kind).name)
        history = history_of(request)
        known = np.isin(history.movie_ids, model.encoder.movie_ids)
        if not known.any():
            raise NotFound("none of the user's rated movies is known to the model")
        history = History(history.movie_ids[known], history.ratings[known],
                          history.timestamps[known])
        with model_span(model, kind):
            vector, used = embed_user_history(model.encoder, history, self.history_limit)
        return pb.EmbedHistoryResponse(embedding=embedding(model, vector), used_movie_ids=used)

    async def EmbedMovies(self, request, context):  # noqa: N802
        movies = movies_of(request)
        out = []
        for loaded in self.models.current.values():
            new = [m for m in movies if m.movie_id not in loaded.items]   # keep learned ones
            if loaded.content is None or not new:
                continue
            with model_span(loaded, "content"):
                vectors = loaded.content.vectors([(m.title, m.year or None, tuple(m.genres))
                                                  for m in new])
            out += [pb.MovieEmbedding(model=loaded.model, model_version=loaded.version,
                                      movie_id=m.movie_id, vector=v.tolist())
                    for m, v in zip(new, vectors, strict=True)]
        return pb.EmbedMoviesResponse(embeddings=out)

    async def GetModelInfo(self, request, context):  # noqa: N802
        return pb.GetModelInfoResponse(models=[
            pb.ModelInfo(model=m.model, version=m.version, dim=m.dim, artifact=str(m.path))
            for m in self.models.current.values()])
