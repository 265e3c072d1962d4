"""One validated, canonical form of every ``Recommend`` and ``SimilarMovies`` request.

:func:`recommend_query` checks a request with the shared bounds of
:mod:`movierec.limits` (its query case through :mod:`.kinds`), sorts and de-duplicates
its lists, and returns the :class:`Query` the pipeline runs plus the canonical bytes
that identify it: the cache key and the page tokens are built from those bytes, so two
requests that mean the same get the same answer and the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from movierec import limits, paging, validation
from movierec.apps.gateway import kinds
from movierec.common.v1 import common_pb2
from movierec.errors import InvalidArgument
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.models import registry


@dataclass(frozen=True)
class Query:
    """A validated Recommend request."""

    kind: str                    # a kinds.KINDS name: "profile", "liked", "user"
    top_k: int
    page_start: int              # rank of the first item of the page (0-based)
    profile: common_pb2.Profile | None = None
    liked: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    user_id: int | None = None   # the user it acts as (kinds.Kind.owner)
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

    @classmethod
    def of(cls, message) -> Canonical:
        payload = message.SerializeToString(deterministic=True)
        return cls(payload, paging.fingerprint(payload.hex()))


@dataclass(frozen=True)
class Similar:
    """A validated SimilarMovies request."""

    movie_id: int
    top_k: int
    genres: tuple[str, ...]
    model: str


def genre_filter(values) -> tuple[str, ...]:
    return validation.genres("genres", values)


def recommend_query(request: pb.RecommendRequest) -> tuple[Query, Canonical]:
    """The validated query and its canonical identity; the page comes from the token."""
    kind = kinds.of(request)
    top_k = validation.limit("top_k", request.top_k, 10, limits.MAX_TOP_K)
    genres = genre_filter(request.genres)
    exclude = tuple(sorted(set(validation.id_list("exclude_movie_ids",
                                                  request.exclude_movie_ids,
                                                  limits.MAX_REQUEST_EXCLUDE))))
    fields = kind.parse(request)
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
    identity = Canonical.of(canonical)
    page_start = paging.decode(request.page_token, identity.fingerprint)
    return Query(kind=kind.name, top_k=top_k, page_start=page_start, genres=genres,
                 exclude=exclude, include_seen=request.include_seen, **fields), identity


def similar_query(request: pb.SimilarMoviesRequest) -> tuple[Similar, Canonical]:
    """A SimilarMovies request, validated, and its canonical identity."""
    movie_id = validation.positive_id("movie_id", request.movie_id)
    top_k = validation.limit("top_k", request.top_k, 10, limits.MAX_TOP_K)
    genres = genre_filter(request.genres)
    model = request.model or registry.DEFAULT_SIMILAR
    if model not in registry.similar_models():
        raise InvalidArgument("model", f"must be one of {', '.join(registry.similar_models())}")
    canonical = pb.SimilarMoviesRequest(movie_id=movie_id, top_k=top_k, genres=genres,
                                        model=model)
    return Similar(movie_id, top_k, genres, model), Canonical.of(canonical)
