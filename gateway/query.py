"""One validated, canonical form of every ``Recommend`` and ``SimilarMovies`` request.

:func:`recommend_query` checks a request with the shared bounds of
:mod:`movierec.limits`, sorts and de-duplicates its lists, and returns the
:class:`Query` the pipeline runs plus the canonical bytes that identify it: the cache
key and the page tokens are built from those bytes, so two requests that mean the same
get the same answer and the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from movierec import limits, paging, validation
from movierec.common.v1 import common_pb2
from movierec.data.movielens import AGE_BUCKETS, NUM_OCCUPATIONS, OCCUPATIONS, age_bucket
from movierec.errors import InvalidArgument
from movierec.gateway.v1 import gateway_pb2 as pb

MODELS = ("pinsage", "fusion")


@dataclass(frozen=True)
class Query:
    """A validated Recommend request."""

    kind: str                    # "profile", "liked" or "user"
    top_k: int
    page_start: int              # rank of the first item of the page (0-based)
    profile: common_pb2.Profile | None = None
    liked: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    user_id: int | None = None
    genres: tuple[str, ...] = ()
    exclude: tuple[int, ...] = ()
    include_seen: bool = False

    @property
    def hides_seen(self) -> bool:
        """Whether the user's rated movies are left out (a known user, by default)."""
        return self.user_id is not None and not self.include_seen


@dataclass(frozen=True)
class Canonical:
    """The bytes that identify a request (page excluded) and their short fingerprint."""

    payload: bytes
    fingerprint: str


def check_profile(profile: common_pb2.Profile) -> None:
    if not limits.MIN_AGE <= profile.age <= limits.MAX_AGE:
        raise InvalidArgument("profile.age", f"must be {limits.MIN_AGE}-{limits.MAX_AGE} years, "
                                             f"got {profile.age}")
    if profile.gender not in ("M", "F"):
        raise InvalidArgument("profile.gender", "must be 'M' or 'F'")
    if not 0 <= profile.occupation < NUM_OCCUPATIONS:
        raise InvalidArgument("profile.occupation",
                              f"must be 0-{NUM_OCCUPATIONS - 1}, got {profile.occupation}")
    if profile.HasField("user_id"):
        validation.positive_id("profile.user_id", profile.user_id)


def describe_profile(profile: common_pb2.Profile) -> str:
    low, high = AGE_BUCKETS[age_bucket(profile.age)]
    ages = f"{low}-{high}" if high < 200 else f"{low}+"
    job = OCCUPATIONS[profile.occupation] if 0 <= profile.occupation < 21 else "other"
    return f"{'women' if profile.gender == 'F' else 'men'} aged {ages}, {job}"


def genre_filter(values) -> tuple[str, ...]:
    return validation.genres("genres", values)


def _kind_fields(request: pb.RecommendRequest) -> dict:
    kind = request.WhichOneof("query")
    if kind == "profile":
        check_profile(request.profile)
        user_id = request.profile.user_id if request.profile.HasField("user_id") else None
        return {"kind": "profile", "profile": request.profile, "user_id": user_id}
    if kind == "liked":
        liked = validation.id_list("liked.movie_ids", request.liked.movie_ids,
                                   limits.MAX_LIKED, allow_empty=False)
        weights = validation.weights("liked.weights", request.liked.weights, len(liked))
        return {"kind": "liked", "liked": tuple(liked), "weights": tuple(weights or ())}
    if kind == "user_id":
        return {"kind": "user", "user_id": validation.positive_id("user_id", request.user_id)}
    raise InvalidArgument("query", "set one of profile, liked or user_id")


def recommend_query(request: pb.RecommendRequest) -> tuple[Query, Canonical]:
    """The validated query and its canonical identity; the page comes from the token."""
    top_k = validation.limit("top_k", request.top_k, 10, limits.MAX_TOP_K)
    genres = genre_filter(request.genres)
    exclude = tuple(sorted(set(validation.id_list("exclude_movie_ids",
                                                  request.exclude_movie_ids,
                                                  limits.MAX_REQUEST_EXCLUDE))))
    fields = _kind_fields(request)
    if request.include_seen and fields.get("user_id") is None:
        raise InvalidArgument("include_seen", "needs a user id (user_id or profile.user_id)")
    canonical = pb.RecommendRequest()
    canonical.CopyFrom(request)
    canonical.page_token = ""
    canonical.top_k = top_k
    del canonical.genres[:]
    canonical.genres.extend(genres)
    del canonical.exclude_movie_ids[:]
    canonical.exclude_movie_ids.extend(exclude)
    payload = canonical.SerializeToString(deterministic=True)
    identity = Canonical(payload, paging.fingerprint(payload.hex()))
    page_start = paging.decode(request.page_token, identity.fingerprint)
    return Query(top_k=top_k, page_start=page_start, genres=genres, exclude=exclude,
                 include_seen=request.include_seen, **fields), identity


def similar_query(request: pb.SimilarMoviesRequest) -> tuple[int, int, tuple[str, ...], str,
                                                              Canonical]:
    """(movie id, top_k, genres, model, canonical identity) of a SimilarMovies request."""
    movie_id = validation.positive_id("movie_id", request.movie_id)
    top_k = validation.limit("top_k", request.top_k, 10, limits.MAX_TOP_K)
    genres = genre_filter(request.genres)
    model = request.model or "pinsage"
    if model not in MODELS:
        raise InvalidArgument("model", f"must be one of {', '.join(MODELS)}")
    canonical = pb.SimilarMoviesRequest(movie_id=movie_id, top_k=top_k, genres=genres,
                                        model=model)
    payload = canonical.SerializeToString(deterministic=True)
    return movie_id, top_k, genres, model, Canonical(payload, paging.fingerprint(payload.hex()))
