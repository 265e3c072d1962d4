"""No input reaches INTERNAL or UNKNOWN, on any RPC of any service.

Hypothesis builds requests for every RPC of the four services from their proto
descriptors (:mod:`proto_strategies`: extremes, NaN, hostile text, over-long lists, bad
page tokens, every oneof branch) and sends them to the running stack; each answer's
code must be one documented for that RPC (:data:`DOCUMENTED`). Every input that ever
failed is kept in ``tests/corpus/`` and replayed first; a new failure is appended there
automatically, so it stays a regression test once fixed.

The write RPCs (UpsertMovies, UpsertUser, DeleteUser) change the session's shared stack
(they rename movies and delete users): the catalog's tables are saved before this module
and put back after it, and the answer cache is emptied, for the tests that follow.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import psycopg
import pytest
import redis
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from proto_strategies import build, message
from stack_fixture import Stack

from movierec import registry
from movierec.catalog.v1 import catalog_pb2
from movierec.embedder.v1 import embedder_pb2
from movierec.gateway.v1 import gateway_pb2
from movierec.retriever.v1 import retriever_pb2

CORPUS = Path(__file__).parent / "corpus"
C = grpc.StatusCode
#: The caller's problems: any RPC may answer them for a bad request.
CALLER = {C.OK, C.INVALID_ARGUMENT}
#: What each RPC may answer besides CALLER (README, "Status codes").
DOCUMENTED: dict[str, set[C]] = {
    "Gateway.Recommend": {C.NOT_FOUND},                      # unknown user or liked ids
    "Gateway.SimilarMovies": {C.NOT_FOUND},                  # movie without a vector
    "Gateway.RecordRating": {C.NOT_FOUND},                   # unknown movie
    "Catalog.GetUser": {C.NOT_FOUND},
    "Catalog.GetUserHistory": {C.NOT_FOUND},
    "Catalog.RecordRating": {C.NOT_FOUND},
    # no live collection for that model name; a dimension or version mismatch
    "Retriever.Search": {C.NOT_FOUND, C.FAILED_PRECONDITION},
    "Retriever.GetVectors": {C.NOT_FOUND, C.FAILED_PRECONDITION},
    "Retriever.DescribeModel": {C.NOT_FOUND, C.FAILED_PRECONDITION},
    "Embedder.EmbedHistory": {C.NOT_FOUND},                  # no known movie rated
    # writes: an unknown user to delete; no id left above the largest (never in practice)
    "Gateway.UpsertMovies": {C.FAILED_PRECONDITION},
    "Gateway.UpsertUser": {C.FAILED_PRECONDITION},
    "Gateway.DeleteUser": {C.NOT_FOUND},
    "Catalog.UpsertMovies": {C.FAILED_PRECONDITION},
    "Catalog.UpsertUser": {C.FAILED_PRECONDITION},
    "Catalog.DeleteUser": {C.NOT_FOUND},
}
#: With GATEWAY_AUTH_REQUIRED: the requests that act as a user or write
#: (gateway/guard.py POLICY).
AUTH = {"Gateway.Recommend", "Gateway.RecordRating", "Gateway.UpsertMovies",
        "Gateway.UpsertUser", "Gateway.DeleteUser"}
AUTH_CODES = {C.UNAUTHENTICATED, C.PERMISSION_DENIED}
MODULES = {"gateway": gateway_pb2, "catalog": catalog_pb2, "retriever": retriever_pb2,
           "embedder": embedder_pb2}
METHODS = [(name, method) for name, module in MODULES.items()
           for service in module.DESCRIPTOR.services_by_name.values()
           for method in service.methods]
FAILED: dict[str, dict] = {}


def _key(method) -> str:
    return f"{method.containing_service.name}.{method.name}"


def _call(stack: Stack, service: str, method, request) -> C:
    port = stack.env[registry.get(service).port_env]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            f"/{method.containing_service.full_name}/{method.name}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=method.output_type._concrete_class.FromString)
        try:
            call(request, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return C.OK


def _allowed(stack: Stack, method) -> set[C]:
    """The codes documented for ``method`` on this stack (its auth and rate limit)."""
    allowed = CALLER | DOCUMENTED.get(_key(method), set())
    if _key(method) in AUTH and stack.env.get("GATEWAY_AUTH_REQUIRED") == "true":
        allowed |= AUTH_CODES
    if method.containing_service.name == "Gateway" and float(
            stack.env.get("GATEWAY_RATE_LIMIT") or 0):
        allowed.add(C.RESOURCE_EXHAUSTED)
    return allowed


def _check(stack: Stack, service: str, method, request) -> None:
    code = _call(stack, service, method, request)
    allowed = _allowed(stack, method)
    if code not in allowed:
        FAILED[_key(method)] = json_format.MessageToDict(request)
    assert code in allowed, f"{_key(method)} answered {code.name} for {request}"


@pytest.fixture(scope="module", autouse=True)
def _keep_failures():
    yield
    CORPUS.mkdir(exist_ok=True)
    for key, request in FAILED.items():
        path, line = CORPUS / f"{key}.jsonl", json.dumps(request, sort_keys=True)
        if not path.exists() or line not in path.read_text().splitlines():
            with path.open("a") as out:
                out.write(line + "\n")


#: The catalog's tables, parents first, and the columns a restore writes back.
TABLES = {"movies": "movie_id, title, year, genres",
          "users": "user_id, gender, age, occupation, zip",
          "ratings": "user_id, movie_id, rating, rated_at"}


@pytest.fixture(scope="module", autouse=True)
def _restore_catalog(stack: Stack):
    """Save the stack's catalog, and put it back (one transaction) after this module."""
    url = stack.env["DATABASE_URL"]
    with psycopg.connect(url) as conn:
        saved = {table: conn.execute(f"SELECT {columns} FROM {table}").fetchall()
                 for table, columns in TABLES.items()}
    yield
    with psycopg.connect(url) as conn, conn.transaction():
        for table in reversed(TABLES):
            conn.execute(f"DELETE FROM {table}")
        for table, columns in TABLES.items():
            with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in saved[table]:
                    copy.write_row(row)
        conn.execute("REFRESH MATERIALIZED VIEW movie_popularity")
    with redis.Redis.from_url(stack.env["REDIS_URL"]) as cache:
        cache.flushdb()
    time.sleep(2.0)   # the gateway's movie snapshot follows the catalog version (1 s)


def _corpus() -> list[tuple[str, object, dict]]:
    by_key = {_key(m): (service, m) for service, m in METHODS}
    cases = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        service, method = by_key[path.stem]
        cases += [(service, method, json.loads(line))
                  for line in path.read_text().splitlines() if line.strip()]
    return cases


@pytest.mark.parametrize(("service", "method", "body"), _corpus(),
                         ids=lambda v: _key(v) if hasattr(v, "containing_service") else None)
def test_every_input_that_ever_failed(stack: Stack, service: str, method, body) -> None:
    request = json_format.ParseDict(body, method.input_type._concrete_class())
    _check(stack, service, method, request)


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[_key(m) for _, m in METHODS])
def test_generated_and_hostile_requests(stack: Stack, service: str, method) -> None:
    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(message(method.input_type))
    def one(fields: dict) -> None:
        _check(stack, service, method, build(method.input_type._concrete_class, fields))
    one()
