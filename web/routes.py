"""The ``/api`` endpoints: thin translations between JSON and the gRPC calls.

Failures are not handled here: a ``grpc.aio.AioRpcError`` propagates to the handlers
in :mod:`movierec.apps.web.status`, which choose the HTTP status and body.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from movierec.apps.web import schemas
from movierec.apps.web.backend import Backend
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.models import registry

router = APIRouter(prefix="/api")
#: the models SimilarMovies takes (the model registry's)
SIMILAR_MODELS = "^(" + "|".join(registry.similar_models()) + ")$"
ERRORS = {code: {"description": text, "content": {"application/json": {"example": {
    "error": name, "message": "..."}}}} for code, name, text in (
    (400, "INVALID_ARGUMENT", "a field is invalid; the message names it"),
    (401, "UNAUTHENTICATED", "a user's request without a valid token (Authorization: "
                             "Bearer <token>), when the server requires tokens"),
    (403, "PERMISSION_DENIED", "the token is another user's (or, for catalog and user "
                               "writes, not an admin's)"),
    (404, "NOT_FOUND", "the movie or user does not exist, or the movie has no vector"),
    (413, "REQUEST_ENTITY_TOO_LARGE", "the request body is over the limit"),
    (429, "RESOURCE_EXHAUSTED", "over the rate limit; Retry-After says when to retry"),
    (503, "UNAVAILABLE", "the gateway or a service behind it is down, too slow or not "
                         "ready"))}
Genre = Annotated[str | None, Query(max_length=50, description="keep movies of this genre")]
Limit = Annotated[int, Query(ge=1, le=100)]
UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def backend(request: Request) -> Backend:
    """The gateway client for this request: its ``Authorization`` and address go along."""
    address = request.client.host if request.client else None
    return request.app.state.backend.for_caller(request.headers.get("authorization"),
                                                address)


Client = Annotated[Backend, Depends(backend)]


@router.get("/health", response_model=schemas.Health, responses={503: {}})
async def health(b: Client):
    """SERVING (200) once the gateway reports SERVING; 503 otherwise."""
    status = await b.gateway_health()
    return JSONResponse({"gateway": status}, status_code=200 if status == "SERVING" else 503)


@router.get("/genres", response_model=schemas.Genres, responses=ERRORS)
async def genres(b: Client) -> schemas.Genres:
    """Every genre of the catalog (the gateway's ``ListGenres``)."""
    return schemas.Genres(genres=list((await b.genres()).genres))


@router.get("/movies/popular", response_model=schemas.MovieList, responses=ERRORS)
async def popular(b: Client, genre: Genre = None, limit: Limit = 24) -> schemas.MovieList:
    """The most rated movies, to pick liked ones from (the gateway's ``ListPopular``)."""
    reply = await b.popular([genre] if genre else [], limit)
    return schemas.MovieList(movies=[schemas.movie(m.movie) for m in reply.movies])


@router.get("/movies/search", response_model=schemas.MovieList, responses=ERRORS)
async def search(b: Client, q: Annotated[str, Query(min_length=1, max_length=200)],
                 genre: Genre = None, limit: Limit = 20,
                 page_token: Annotated[str, Query(max_length=1024)] = ""
                 ) -> schemas.MovieList:
    """Title search, best matches first, paged with ``next_page_token``."""
    reply = await b.search(pb.SearchMoviesRequest(query=q, genres=[genre] if genre else [],
                                                  limit=limit, page_token=page_token))
    return schemas.MovieList(movies=[schemas.movie(m) for m in reply.movies],
                             next_page_token=reply.next_page_token)


@router.get("/movies/{movie_id}/similar", response_model=schemas.Recommendations,
            responses=ERRORS)
async def similar(b: Client, movie_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
                  top_k: Limit = 10, genre: Genre = None,
                  model: Annotated[str, Query(pattern=SIMILAR_MODELS)] = registry.DEFAULT_SIMILAR
                  ) -> schemas.Recommendations:
    """Movies close to one movie in the chosen model's vector space."""
    reply = await b.similar(pb.SimilarMoviesRequest(movie_id=movie_id, top_k=top_k,
                                                    genres=[genre] if genre else [],
                                                    model=model))
    return schemas.recommendations(reply)


@router.post("/recommend", response_model=schemas.Recommendations, responses=ERRORS)
async def recommend(b: Client, body: schemas.RecommendIn) -> schemas.Recommendations:
    """Recommendations for a profile, liked movies, a new user's profile and likes
    (``profile_and_liked``) or a user id; page with ``page_token``."""
    return schemas.recommendations(await b.recommend(body.to_proto()))


@router.post("/ratings", response_model=schemas.RatingOut, responses=ERRORS)
async def rate(b: Client, body: schemas.RatingIn) -> schemas.RatingOut:
    """Store a rating (1-5); the user's cached recommendations are dropped."""
    reply = await b.rate(body.to_proto())
    return schemas.RatingOut(user_id=reply.user_id, movie_id=reply.movie_id,
                             rating=reply.rating, timestamp=reply.timestamp)


@router.post("/movies", response_model=schemas.MovieList, responses=ERRORS)
async def upsert_movies(b: Client, body: schemas.MoviesIn) -> schemas.MovieList:
    """Add or update movies, all or none (an admin's token when tokens are required); a
    movie without an id is matched on (title, year) or gets a new one. Idempotent."""
    reply = await b.upsert_movies(body.to_proto())
    return schemas.MovieList(movies=[schemas.movie(m) for m in reply.movies])


@router.post("/users", response_model=schemas.UserOut, status_code=201, responses=ERRORS)
async def sign_up(b: Client, body: schemas.UserIn) -> schemas.UserOut:
    """Sign a user up with a new id (an admin's token when tokens are required)."""
    return schemas.user(await b.upsert_user(body.to_proto()))


@router.put("/users/{user_id}", response_model=schemas.UserOut, responses=ERRORS)
async def set_profile(b: Client, user_id: UserId, body: schemas.UserIn) -> schemas.UserOut:
    """Set a user's profile, creating the user if needed (that user's or an admin's
    token when tokens are required); their cached recommendations are dropped."""
    return schemas.user(await b.upsert_user(body.to_proto(user_id)))


@router.delete("/users/{user_id}", response_model=schemas.UserDeleted, responses=ERRORS)
async def delete_user(b: Client, user_id: UserId) -> schemas.UserDeleted:
    """Delete a user's profile and ratings (that user's or an admin's token when tokens
    are required); recommendations for that id are 404 from then on."""
    reply = await b.delete_user(user_id)
    return schemas.UserDeleted(user_id=reply.user_id, ratings_deleted=reply.ratings_deleted)
