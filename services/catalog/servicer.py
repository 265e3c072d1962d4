"""gRPC servicer of ``movierec.catalog.v1.Catalog``: validation and protobuf <-> domain.

Business rules live in :mod:`movierec.services.catalog.store`; errors raised there become
status codes in the shared interceptor. Every call's database time is bounded by the
caller's remaining deadline (capped by the configured per-call timeout).
"""

from __future__ import annotations

import grpc

from movierec import limits, paging, validation
from movierec.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from movierec.common.v1 import common_pb2
from movierec.server.budget import call_budget
from movierec.services.catalog.store import CatalogStore, Movie, Rating, SearchQuery, User


def movie_pb(movie: Movie) -> common_pb2.Movie:
    return common_pb2.Movie(movie_id=movie.movie_id, title=movie.title, year=movie.year or 0,
                            genres=list(movie.genres))


def user_pb(user: User) -> catalog_pb2.User:
    return catalog_pb2.User(user_id=user.user_id, gender=user.gender or "", age=user.age or 0,
                            occupation=user.occupation or 0, zip=user.zip or "")


def rating_pb(rating: Rating) -> catalog_pb2.Rating:
    return catalog_pb2.Rating(user_id=rating.user_id, movie_id=rating.movie_id,
                              rating=rating.rating, timestamp=int(rating.rated_at.timestamp()))


class CatalogServicer(catalog_pb2_grpc.CatalogServicer):
    """Thin translation layer over :class:`CatalogStore`."""

    def __init__(self, store: CatalogStore, call_timeout: float) -> None:
        self.store = store
        self.call_timeout = call_timeout

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        return call_budget(context, self.call_timeout)

    async def GetMovies(self, request, context):  # noqa: N802
        ids = validation.id_list("movie_ids", request.movie_ids, limits.MAX_BATCH_IDS)
        found = await self.store.get_movies(set(ids), self._timeout(context))
        return catalog_pb2.GetMoviesResponse(
            movies=[movie_pb(found[i]) for i in ids if i in found],
            missing_ids=[i for i in dict.fromkeys(ids) if i not in found])

    async def SearchMovies(self, request, context):  # noqa: N802
        text = validation.text("query", request.query)
        genres = validation.genres("genres", request.genres)
        low, high = validation.year_range("years", request.years.min_year,
                                          request.years.max_year)
        limit = validation.limit("limit", request.limit, 20, limits.MAX_SEARCH)
        request_print = paging.fingerprint(text.lower(), sorted(genres), low, high, limit)
        offset = paging.decode(request.page_token, request_print)
        query = SearchQuery(text, genres, low, high, limit + 1, offset)
        rows = await self.store.search_movies(query, self._timeout(context))
        token = paging.encode(offset + limit, request_print) if len(rows) > limit else ""
        return catalog_pb2.SearchMoviesResponse(
            movies=[catalog_pb2.ScoredMovie(movie=movie_pb(m), score=s) for m, s in rows[:limit]],
            next_page_token=token)

    async def ListGenres(self, request, context):  # noqa: N802
        return catalog_pb2.ListGenresResponse(
            genres=await self.store.list_genres(self._timeout(context)))

    async def ListPopular(self, request, context):  # noqa: N802
        genres = validation.genres("genres", request.genres)
        limit = validation.limit("limit", request.limit, 20, limits.MAX_POPULAR)
        exclude = validation.id_list("exclude_movie_ids", request.exclude_movie_ids,
                                     limits.MAX_EXCLUDE)
        rows = await self.store.list_popular(genres, limit, exclude, self._timeout(context))
        return catalog_pb2.ListPopularResponse(
            movies=[catalog_pb2.ScoredMovie(movie=movie_pb(m), score=s) for m, s in rows])

    async def GetUser(self, request, context):  # noqa: N802
        user_id = validation.positive_id("user_id", request.user_id)
        user = await self.store.get_user(user_id, self._timeout(context))
        return catalog_pb2.GetUserResponse(user=user_pb(user))

    async def GetUserHistory(self, request, context):  # noqa: N802
        user_id = validation.positive_id("user_id", request.user_id)
        limit = validation.limit("limit", request.limit, 100, limits.MAX_HISTORY)
        if not 0 <= request.min_rating <= 5:
            raise validation.InvalidArgument("min_rating", "must be between 0 and 5")
        user, history = await self.store.get_user_history(user_id, limit, request.min_rating,
                                                          self._timeout(context))
        rated = common_pb2.RatedMovies(movie_ids=history.movie_ids, ratings=history.ratings,
                                       timestamps=history.timestamps)
        return catalog_pb2.GetUserHistoryResponse(user=user_pb(user), history=rated)

    async def ListMovies(self, request, context):  # noqa: N802
        after = validation.limit("after_movie_id", request.after_movie_id, 0, limits.MAX_ID)
        limit = validation.limit("limit", request.limit, 1000, limits.MAX_LIST_MOVIES)
        movies, version = await self.store.list_movies(after, limit, self._timeout(context))
        return catalog_pb2.ListMoviesResponse(movies=[movie_pb(m) for m in movies],
                                              catalog_version=version)

    async def GetCatalogVersion(self, request, context):  # noqa: N802
        return catalog_pb2.GetCatalogVersionResponse(
            catalog_version=await self.store.catalog_version(self._timeout(context)))

    async def RecordRating(self, request, context):  # noqa: N802
        user_id = validation.positive_id("user_id", request.user_id)
        movie_id = validation.positive_id("movie_id", request.movie_id)
        stars = validation.rating("rating", request.rating)
        stored = await self.store.record_rating(user_id, movie_id, stars,
                                                self._timeout(context))
        return catalog_pb2.RecordRatingResponse(rating=rating_pb(stored))

    async def UpsertMovies(self, request, context):  # noqa: N802
        movies = [Movie(movie_id or 0, title, year, genres) for movie_id, title, year, genres
                  in validation.movies("movies", request.movies)]
        stored = await self.store.upsert_movies(movies, self._timeout(context))
        return catalog_pb2.UpsertMoviesResponse(movies=[movie_pb(m) for m in stored])

    async def UpsertUser(self, request, context):  # noqa: N802
        user_id, age, gender, occupation = validation.user_profile(
            request.user_id, request.age, request.gender, request.occupation)
        user, created = await self.store.upsert_user(user_id, age, gender, occupation,
                                                     self._timeout(context))
        return catalog_pb2.UpsertUserResponse(user=user_pb(user), created=created)

    async def DeleteUser(self, request, context):  # noqa: N802
        user_id = validation.positive_id("user_id", request.user_id)
        deleted = await self.store.delete_user(user_id, self._timeout(context))
        return catalog_pb2.DeleteUserResponse(user_id=user_id, ratings_deleted=deleted)
