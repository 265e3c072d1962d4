"""JSON shapes of the facade's API and their conversion from/to the gRPC messages.

Request models bound numbers to what the protobuf fields can hold and check the
one rule protobuf cannot express (a single query kind); every domain rule (age
range, gender, page tokens, id ranges) is the gateway's, so there is one source of
truth and its INVALID_ARGUMENT message reaches the caller unchanged.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from movierec.common.v1 import common_pb2
from movierec.gateway.v1 import gateway_pb2 as pb

Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Movie(BaseModel):
    movie_id: int
    title: str
    year: int | None = Field(description="null when unknown")
    genres: list[str]


class RecommendedMovie(Movie):
    score: float = Field(description="predicted stars (profile) or similarity (others)")
    reason: str = Field(description="why the movie is recommended")


class MovieList(BaseModel):
    movies: list[Movie]
    next_page_token: str = ""


class Recommendations(BaseModel):
    items: list[RecommendedMovie]
    model_version: str
    cached: bool
    next_page_token: str = ""


class ProfileIn(_Strict):
    age: Int32 = Field(description="years, 1-120")
    gender: str = Field(max_length=8, description="'M' or 'F'")
    occupation: Int32 = Field(description="ml-1m occupation id, 0-20")
    user_id: Int64 | None = Field(None, description="a known or visitor user id")


class LikedIn(_Strict):
    movie_ids: list[Int64] = Field(description="movies the visitor liked")
    weights: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(
        [], description="empty, or one weight per movie id")


class OnboardingLikedIn(LikedIn):
    movie_ids: list[Int64] = Field([], description="movies the visitor liked so far "
                                   "(may be empty: the profile alone)")


class ProfileAndLikedIn(_Strict):
    """A new user's profile with the movies they liked so far (both models combined)."""

    profile: ProfileIn
    liked: OnboardingLikedIn = Field(default_factory=OnboardingLikedIn)


#: the query cases of ``RecommendRequest``, exactly one of which a request sets
QUERY_CASES = ("profile", "liked", "user_id", "next_for_user_id", "profile_and_liked")


class RecommendIn(_Strict):
    """Mirrors ``RecommendRequest``: set exactly one of profile, liked, user_id,
    next_for_user_id or profile_and_liked."""

    profile: ProfileIn | None = None
    liked: LikedIn | None = None
    user_id: Int64 | None = None
    next_for_user_id: Int64 | None = Field(None, description="what this known user will "
                                           "watch next (their history in time order)")
    profile_and_liked: ProfileAndLikedIn | None = Field(
        None, description="a new user's profile and the movies they liked so far")
    top_k: Int32 = Field(0, description="1-100; 0 means 10")
    genres: list[str] = Field([], description="keep movies of any of these genres")
    exclude_movie_ids: list[Int64] = []
    include_seen: bool = Field(False, description="also show movies the user id has rated "
                               "(hidden by default)")
    page_token: str = Field("", max_length=1024, description="a previous next_page_token")

    @model_validator(mode="after")
    def _one_query(self) -> RecommendIn:
        if sum(getattr(self, case) is not None for case in QUERY_CASES) != 1:
            raise ValueError(f"set exactly one of {', '.join(QUERY_CASES[:-1])} or "
                             f"{QUERY_CASES[-1]}")
        return self

    def to_proto(self) -> pb.RecommendRequest:
        request = pb.RecommendRequest(top_k=self.top_k, genres=self.genres,
                                      exclude_movie_ids=self.exclude_movie_ids,
                                      include_seen=self.include_seen,
                                      page_token=self.page_token)
        if self.profile is not None:
            request.profile.CopyFrom(common_pb2.Profile(**self.profile.model_dump(
                exclude_none=True)))
        elif self.liked is not None:
            request.liked.CopyFrom(common_pb2.LikedMovies(**self.liked.model_dump()))
        elif self.user_id is not None:
            request.user_id = self.user_id
        elif self.profile_and_liked is not None:
            both = self.profile_and_liked
            request.profile_and_liked.CopyFrom(pb.ProfileAndLiked(
                profile=common_pb2.Profile(**both.profile.model_dump(exclude_none=True)),
                liked=common_pb2.LikedMovies(**both.liked.model_dump())))
        else:
            request.next_for_user_id = self.next_for_user_id
        return request


class RatingIn(_Strict):
    user_id: Int64 = Field(description="the visitor's id")
    movie_id: Int64
    rating: Int32 = Field(description="stars, 1-5")

    def to_proto(self) -> pb.RecordRatingRequest:
        return pb.RecordRatingRequest(**self.model_dump())


class RatingOut(BaseModel):
    user_id: int
    movie_id: int
    rating: int
    timestamp: int = Field(description="unix seconds")


class MovieIn(_Strict):
    """A movie to add or update; the gateway checks the title, year and genres."""

    movie_id: Int64 = Field(0, description="0: matched on (title, year), else a new id")
    title: str
    year: Int32 = Field(0, description="0 when unknown, else 1800-2200")
    genres: list[str] = Field([], description="MovieLens genre names (GET /api/genres)")


class MoviesIn(_Strict):
    movies: list[MovieIn] = Field(description="added or updated together, or none is")

    def to_proto(self) -> pb.UpsertMoviesRequest:
        return pb.UpsertMoviesRequest(movies=[common_pb2.Movie(**m.model_dump())
                                              for m in self.movies])


class UserIn(_Strict):
    """A user's profile, as the gateway's ``UpsertUser`` takes it."""

    age: Int32 = Field(description="years, 1-120 (stored as the ml-1m age bucket)")
    gender: str = Field(max_length=8, description="'M' or 'F'")
    occupation: Int32 = Field(description="ml-1m occupation id, 0-20")

    def to_proto(self, user_id: int = 0) -> pb.UpsertUserRequest:
        return pb.UpsertUserRequest(user_id=user_id, **self.model_dump())


class UserOut(BaseModel):
    user_id: int
    age_bucket: int = Field(description="the ml-1m age bucket code the age was stored as")
    gender: str
    occupation: int
    created: bool = Field(description="a new user (false: an existing profile was set)")


class UserDeleted(BaseModel):
    user_id: int
    ratings_deleted: int


class Genres(BaseModel):
    genres: list[str]


class Health(BaseModel):
    gateway: str


def movie(message) -> Movie:
    """A ``common.v1.Movie`` (or anything with its fields) as JSON."""
    return Movie(movie_id=message.movie_id, title=message.title, year=message.year or None,
                 genres=list(message.genres))


def user(reply: pb.UpsertUserResponse) -> UserOut:
    return UserOut(user_id=reply.user_id, age_bucket=reply.age_bucket, gender=reply.gender,
                   occupation=reply.occupation, created=reply.created)


def recommendations(reply) -> Recommendations:
    """A Recommend/SimilarMovies reply as JSON."""
    items = [RecommendedMovie(**movie(i).model_dump(), score=round(i.score, 4),
                              reason=i.reason) for i in reply.items]
    return Recommendations(items=items, model_version=reply.model_version, cached=reply.cached,
                           next_page_token=getattr(reply, "next_page_token", ""))
