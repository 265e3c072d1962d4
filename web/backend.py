"""The facade's gRPC client of the gateway, the only service it calls.

Every call carries a deadline (``WEB_CALL_TIMEOUT``), the current request id and, for
the gateway's authentication and rate limit, the HTTP caller's ``Authorization``
header (passed through as-is) and address (``x-forwarded-for``; the gateway believes
it when it lists the facade in ``GATEWAY_TRUSTED_PROXIES``). Reads are retried on
UNAVAILABLE within that deadline; writes never are. The channel uses TLS when the
process has TLS settings.
"""

from __future__ import annotations

import copy

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.gateway.v1 import gateway_pb2_grpc
from movierec.server import client

AUTHORIZATION = "authorization"
FORWARDED_FOR = "x-forwarded-for"


class Backend:
    """An open channel to the gateway; create inside the serving loop."""

    def __init__(self, gateway_addr: str, timeout: float,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.timeout = timeout
        self.metadata: tuple[tuple[str, str], ...] = ()
        self._gateway_channel = client.channel(gateway_addr, credentials=credentials)
        self.gateway = gateway_pb2_grpc.GatewayStub(self._gateway_channel)
        self._health = health_pb2_grpc.HealthStub(self._gateway_channel)

    def for_caller(self, authorization: str | None, address: str | None) -> Backend:
        """This backend, its calls carrying one HTTP caller's credentials and address."""
        bound = copy.copy(self)
        bound.metadata = tuple((key, value) for key, value in (
            (AUTHORIZATION, authorization), (FORWARDED_FOR, address)) if value)
        return bound

    async def _call(self, method, request, target: str, idempotent: bool = True):
        return await client.call(method, request, timeout=self.timeout, target=target,
                                 idempotent=idempotent, metadata=self.metadata)

    async def recommend(self, request: pb.RecommendRequest) -> pb.RecommendResponse:
        return await self._call(self.gateway.Recommend, request, "gateway")

    async def similar(self, request: pb.SimilarMoviesRequest) -> pb.SimilarMoviesResponse:
        return await self._call(self.gateway.SimilarMovies, request, "gateway")

    async def search(self, request: pb.SearchMoviesRequest) -> pb.SearchMoviesResponse:
        return await self._call(self.gateway.SearchMovies, request, "gateway")

    async def rate(self, request: pb.RecordRatingRequest) -> pb.RecordRatingResponse:
        # a write: never retried (a retry could apply it twice with another timestamp)
        return await self._call(self.gateway.RecordRating, request, "gateway", idempotent=False)

    # writes: never retried, like ratings (a retried sign-up would create a second user)
    async def upsert_movies(self, request: pb.UpsertMoviesRequest) -> pb.UpsertMoviesResponse:
        return await self._call(self.gateway.UpsertMovies, request, "gateway", idempotent=False)

    async def upsert_user(self, request: pb.UpsertUserRequest) -> pb.UpsertUserResponse:
        return await self._call(self.gateway.UpsertUser, request, "gateway", idempotent=False)

    async def delete_user(self, user_id: int) -> pb.DeleteUserResponse:
        return await self._call(self.gateway.DeleteUser, pb.DeleteUserRequest(user_id=user_id),
                                "gateway", idempotent=False)

    async def popular(self, genres: list[str], limit: int) -> pb.ListPopularResponse:
        return await self._call(self.gateway.ListPopular, pb.ListPopularRequest(
            genres=genres, limit=limit), "gateway")

    async def genres(self) -> pb.ListGenresResponse:
        return await self._call(self.gateway.ListGenres, pb.ListGenresRequest(), "gateway")

    async def gateway_health(self) -> str:
        """The gateway's health status name; UNAVAILABLE when it cannot be reached."""
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(),
                                             timeout=min(self.timeout, 1.0))
        except grpc.aio.AioRpcError:
            return "UNAVAILABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    async def close(self) -> None:
        await self._gateway_channel.close()
