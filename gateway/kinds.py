"""The kinds of ``Recommend`` query, one object each: the one table the gateway reads.

A kind owns everything that differs between queries: which ``RecommendRequest.query``
case it is, how that part is validated, which user id the request acts as (the
access rule :mod:`.guard` enforces), and how it becomes a :class:`Signal` (a query
vector, the movies the user liked that a reason may name, the movies left out, who the
answer is for). The pipeline (:mod:`.recommend`), the cache key (:mod:`.query`: the
canonical request and, per :meth:`Kind.owner`, the user's generation) and the guard
know kinds only through this table, so adding a kind is one class here, its proto
case and its tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from movierec import limits, validation
from movierec.common.v1 import common_pb2
from movierec.data.movielens import (
    AGE_BUCKETS,
    OCCUPATIONS,
    age_bucket,
    bucket_years,
)
from movierec.embedder.v1 import embedder_pb2
from movierec.errors import InvalidArgument, NotFound
from movierec.gateway.v1 import gateway_pb2 as pb

if TYPE_CHECKING:
    from movierec.apps.gateway.query import Query

LIKED_STARS = 4     # a rating that says "liked": what a reason may name


@dataclass(frozen=True)
class Signal:
    """What a query turned into."""

    embedding: embedder_pb2.Embedding | None     # None: no personal signal (popular)
    liked: tuple[int, ...] = ()    # movies the user liked: what "because you liked" names
    exclude: tuple[int, ...] = ()  # movies this kind leaves out (liked ids, rated movies)
    context: str = ""              # who the answer is for, or why it is only popular
    unknown: tuple[int, ...] = ()  # liked ids the model does not know
    #: more query vectors, each in its own model's collection, summed with ``embedding``
    also: tuple[embedder_pb2.Embedding, ...] = ()


class Context(Protocol):
    """What a kind may ask of the pipeline while it builds its signal."""

    async def profile_vector(self, profile: common_pb2.Profile) -> embedder_pb2.Embedding: ...

    async def embed_liked(self, liked: common_pb2.LikedMovies
                          ) -> tuple[embedder_pb2.Embedding, list[int]]: ...

    async def embed_history(self, history: common_pb2.RatedMovies,
                            purpose: int = embedder_pb2.HISTORY_PURPOSE_TASTE
                            ) -> embedder_pb2.Embedding | None: ...

    async def user(self, user_id: int) -> tuple[Any, common_pb2.RatedMovies] | None: ...

    async def embed_onboarding(self, profile: common_pb2.Profile,
                               liked: common_pb2.LikedMovies
                               ) -> tuple[list[embedder_pb2.Embedding], list[int]]: ...


class Kind:
    """One query kind (subclasses fill in the four parts)."""

    name: ClassVar[str]      # Query.kind, metrics label
    case: ClassVar[str]      # the RecommendRequest.query oneof case

    def parse(self, request: pb.RecommendRequest) -> dict:
        """Validated Query fields of the request's case; INVALID_ARGUMENT naming a field."""
        raise NotImplementedError

    def owner(self, request: pb.RecommendRequest) -> int | None:
        """The user id the request acts as (needs that user's token), None: anonymous."""
        return None

    async def signal(self, q: Query, ctx: Context) -> Signal:
        raise NotImplementedError


def check_profile(profile: common_pb2.Profile, field: str = "profile") -> None:
    """The profile rules every path shares (:func:`movierec.validation.profile`)."""
    validation.profile(field, profile.age, profile.gender, profile.occupation,
                       profile.user_id if profile.HasField("user_id") else None)


def describe_profile(profile: common_pb2.Profile) -> str:
    low, high = AGE_BUCKETS[age_bucket(profile.age)]
    ages = f"{low}-{high}" if high < 200 else f"{low}+"
    job = OCCUPATIONS[profile.occupation] if 0 <= profile.occupation < 21 else "other"
    return f"{'women' if profile.gender == 'F' else 'men'} aged {ages}, {job}"


class ProfileKind(Kind):
    """Age, gender, occupation (and a known user id): the fusion model's query."""

    name, case = "profile", "profile"

    def parse(self, request):
        check_profile(request.profile)
        return {"profile": request.profile, "user_id": self.owner(request)}

    def owner(self, request):
        return request.profile.user_id if request.profile.HasField("user_id") else None

    async def signal(self, q, ctx):
        embedding, seen = await with_seen(q, ctx, ctx.profile_vector(q.profile))
        return Signal(embedding, exclude=seen, context=describe_profile(q.profile))


async def with_seen(q: Query, ctx: Context, embed) -> tuple[Any, tuple[int, ...]]:
    """(what ``embed`` answers, the movies the query's user rated when they are hidden),
    the two asked concurrently."""
    if not q.hides_seen:
        return await embed, ()
    answer, user = await asyncio.gather(embed, ctx.user(q.user_id))
    return answer, tuple(user[1].movie_ids) if user is not None else ()


class LikedKind(Kind):
    """Movie ids someone liked (optional weights): PinSage's query; the ids are left out."""

    name, case = "liked", "liked"

    def parse(self, request):
        liked, weights = check_liked(request.liked)
        return {"liked": liked, "weights": weights}

    async def signal(self, q, ctx):
        embedding, unknown = await ctx.embed_liked(
            common_pb2.LikedMovies(movie_ids=q.liked, weights=q.weights))
        missing = set(unknown)
        return Signal(embedding, liked=tuple(i for i in q.liked if i not in missing),
                      exclude=q.liked, unknown=tuple(unknown))


def check_liked(liked: common_pb2.LikedMovies, field: str = "liked",
                allow_empty: bool = False) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The liked rules every path shares: ids (1-MAX_LIKED of them) and their weights."""
    ids = validation.id_list(f"{field}.movie_ids", liked.movie_ids, limits.MAX_LIKED,
                             allow_empty=allow_empty)
    weights = validation.weights(f"{field}.weights", liked.weights, len(ids))
    return tuple(ids), tuple(weights or ())


class OnboardingKind(ProfileKind):
    """A new user's profile and the movies they liked so far: the profile's fusion score
    and the likes' PinSage score, standardized and summed with a weight that depends on
    the number of likes (the embedder's ``EmbedOnboarding``, one summed search); the
    profile alone while nothing is liked. The liked ids are left out, and a user id in
    the profile leaves out what that user rated, as for a profile."""

    name, case = "onboarding", "profile_and_liked"

    def parse(self, request):
        part = request.profile_and_liked
        check_profile(part.profile, "profile_and_liked.profile")
        liked, weights = check_liked(part.liked, "profile_and_liked.liked", allow_empty=True)
        return {"profile": part.profile, "liked": liked, "weights": weights,
                "user_id": self.owner(request)}

    def owner(self, request):
        profile = request.profile_and_liked.profile
        return profile.user_id if profile.HasField("user_id") else None

    async def signal(self, q, ctx):
        liked = common_pb2.LikedMovies(movie_ids=q.liked, weights=q.weights)
        (parts, unknown), seen = await with_seen(q, ctx, ctx.embed_onboarding(q.profile, liked))
        missing = set(unknown)
        return Signal(parts[0], liked=tuple(i for i in q.liked if i not in missing),
                      exclude=(*q.liked, *seen), context=describe_profile(q.profile),
                      unknown=tuple(unknown), also=tuple(parts[1:]))


class UserKind(Kind):
    """A known user id: their whole rated history (PinSage: their taste), or their profile
    (fusion) while they have rated nothing; what they rated is left out unless
    ``include_seen``."""

    name, case = "user", "user_id"
    purpose: ClassVar[int] = embedder_pb2.HISTORY_PURPOSE_TASTE

    def parse(self, request):
        return {"user_id": validation.positive_id(self.case, self.owner(request))}

    def owner(self, request):
        return getattr(request, self.case)

    async def signal(self, q, ctx):
        found = await ctx.user(q.user_id)
        if found is None:
            raise NotFound(f"user {q.user_id} does not exist; ask with a profile or liked "
                           f"movies instead")
        user, history = found
        if history.movie_ids:
            return await self._rated(q, ctx, history)
        if not user.gender or not user.age:
            return Signal(None, context=f"user {q.user_id} has no ratings yet")
        profile = common_pb2.Profile(age=bucket_years(user.age), gender=user.gender,
                                     occupation=user.occupation, user_id=q.user_id)
        return Signal(await ctx.profile_vector(profile),
                      context=f"user {q.user_id}'s profile (no ratings yet)")

    async def _rated(self, q, ctx, history: common_pb2.RatedMovies) -> Signal:
        liked = tuple(m for m, r in zip(history.movie_ids, history.ratings, strict=True)
                      if r >= LIKED_STARS)
        seen = () if q.include_seen else tuple(history.movie_ids)
        embedding = await ctx.embed_history(history, self.purpose)
        if embedding is None:
            return Signal(None, exclude=seen,
                          context=f"user {q.user_id} rated no movie the model knows")
        return Signal(embedding, liked=liked, exclude=seen)


class NextKind(UserKind):
    """What a known user will watch next: their history in time order (SASRec); otherwise
    the user-id rules (NOT_FOUND, a profile while they have rated nothing, seen left out)."""

    name, case = "next", "next_for_user_id"
    purpose = embedder_pb2.HISTORY_PURPOSE_NEXT


KINDS: tuple[Kind, ...] = (ProfileKind(), LikedKind(), UserKind(), NextKind(),
                           OnboardingKind())
BY_CASE = {k.case: k for k in KINDS}
BY_NAME = {k.name: k for k in KINDS}


def of(request: pb.RecommendRequest) -> Kind:
    """The kind of a request; INVALID_ARGUMENT when it sets no query."""
    kind = BY_CASE.get(request.WhichOneof("query") or "")
    if kind is None:
        raise InvalidArgument("query", "set one of " + ", ".join(BY_CASE))
    return kind
