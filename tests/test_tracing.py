"""Tracing (docs/tracing.md): off by default, one trace across every hop when on.

In-process: two servers made by ``build_server`` (a relay and an echo) show the W3C
context crossing a gRPC hop, parent/child links, manual spans and the request id being
the trace id; with tracing off nothing is installed, imported or written. Then the real
stack (tests/stack_fixture.py, four ``movierec serve`` processes and the web facade)
with ``MOVIEREC_TRACE_FILE``: one user-id miss yields one trace with spans of every
service, the Redis commands, the SQL queries, the embedder's model call and the Milvus
search, and every service's log line names the trace id.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from movierec import logs, settings, tracing
from movierec.echo.v1 import echo_pb2, echo_pb2_grpc
from movierec.logs import request_id
from movierec.server import client
from movierec.server.echo import SERVICE
from movierec.server.factory import ServiceSpec, build_server
from movierec.tracing import instrument, sdk, waterfall

HEX32 = 32


class Relay(echo_pb2_grpc.EchoServicer):
    """Echo that, given a target, asks it (inside a manual span) and relays its answer."""

    def __init__(self, target: str | None = None) -> None:
        self.target = target
        self.seen: list[tuple[str, str]] = []   # (request id, trace id) per call

    async def Echo(self, request, context):  # noqa: N802 - gRPC method name
        self.seen.append((request_id.get(), tracing.current_trace_id()))
        if self.target is None:
            return echo_pb2.EchoResponse(payload=request.payload)
        with tracing.span("relay.work", {"relay.target": self.target}):
            async with client.channel(self.target) as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                return await client.call(stub.Echo, request, timeout=5)


async def relay_once(front: Relay, back: Relay, metadata: tuple = ()) -> None:
    """Serve ``back`` and ``front`` (pointed at ``back``), call ``front`` once from an
    untraced client (with ``metadata``)."""
    back_server, back_port = await build_server("back", [spec(back)], 0,
                                                settings.ServerSettings())
    front.target = f"127.0.0.1:{back_port}"
    front_server, front_port = await build_server("front", [spec(front)], 0,
                                                  settings.ServerSettings())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{front_port}") as channel:
            await echo_pb2_grpc.EchoStub(channel).Echo(echo_pb2.EchoRequest(payload=b"hi"),
                                                        timeout=5, metadata=metadata)
    finally:
        await front_server.stop(0)
        await back_server.stop(0)


def spec(servicer: Relay) -> ServiceSpec:
    return ServiceSpec(SERVICE, servicer, echo_pb2_grpc.add_EchoServicer_to_server)


@pytest.fixture(scope="module")
def memory():
    """This test process' global tracer provider, spans kept in memory."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another test set the global provider"
    return exporter, provider


@pytest.fixture
def traced(memory, monkeypatch: pytest.MonkeyPatch):
    """Tracing on in this process (as ``tracing.setup`` leaves it) for one test."""
    exporter, provider = memory
    exporter.clear()
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("movierec"))
    return exporter


def json_log(logger: str) -> tuple[io.StringIO, logging.Handler]:
    """Capture ``logger``'s DEBUG records as movierec's JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("test"))
    logging.getLogger(logger).addHandler(handler)
    logging.getLogger(logger).setLevel(logging.DEBUG)
    return stream, handler


def test_one_trace_crosses_a_grpc_hop_and_is_the_request_id(traced) -> None:
    front, back = Relay(), Relay()
    stream, handler = json_log("movierec.rpc")
    try:
        asyncio.run(relay_once(front, back))
    finally:
        logging.getLogger("movierec.rpc").removeHandler(handler)
    spans = {(s.kind.name, s.name): s for s in traced.get_finished_spans()}
    server = spans["SERVER", "/movierec.echo.v1.Echo/Echo"]
    assert set(spans) == {("SERVER", "/movierec.echo.v1.Echo/Echo"), ("INTERNAL", "relay.work"),
                          ("CLIENT", "/movierec.echo.v1.Echo/Echo")}  # no health checks
    servers = [s for s in traced.get_finished_spans() if s.kind.name == "SERVER"]
    trace_ids = {s.context.trace_id for s in traced.get_finished_spans()}
    assert len(servers) == 2 and len(trace_ids) == 1
    front_span, back_span = sorted(servers, key=lambda s: s.start_time)
    work, call = spans["INTERNAL", "relay.work"], spans["CLIENT", "/movierec.echo.v1.Echo/Echo"]
    assert front_span.parent is None                       # the caller was not traced
    assert work.parent.span_id == front_span.context.span_id
    assert call.parent.span_id == work.context.span_id
    assert back_span.parent.span_id == call.context.span_id and back_span.parent.is_remote
    trace_id = f"{server.context.trace_id:032x}"
    assert front.seen == back.seen == [(trace_id, trace_id)]
    ids = {json.loads(line)["request_id"] for line in stream.getvalue().splitlines()}
    assert ids == {trace_id}                               # both servers' "rpc" log lines


def test_an_unsampled_trace_records_nothing_but_keeps_its_id_across_hops(traced) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    front, back = Relay(), Relay()
    asyncio.run(relay_once(front, back, (("traceparent", f"00-{trace_id}-00f067aa0ba902b7-00"),)))
    assert traced.get_finished_spans() == ()
    assert front.seen == back.seen == [(trace_id, trace_id)]


def test_an_unsampled_new_request_gets_a_trace_id_and_no_spans(traced, monkeypatch) -> None:
    monkeypatch.setattr(tracing, "_ratio", 0.0)   # MOVIEREC_TRACE_SAMPLE=0
    front, back = Relay(), Relay()
    asyncio.run(relay_once(front, back))
    assert traced.get_finished_spans() == ()
    [(request, trace_id)] = front.seen
    assert len(trace_id) == HEX32 and request == trace_id and back.seen == front.seen


def test_off_by_default_nothing_installed_or_recorded(memory) -> None:
    exporter, _ = memory
    exporter.clear()
    assert not tracing.setup("test", settings.ServerSettings())
    assert tracing.server_gate() is None and tracing.client_gate() is None
    assert tracing.psycopg_configure() is None and tracing.asgi_gate(tracing) is tracing
    with tracing.span("nothing"):
        assert tracing.current_trace_id() == ""
    front, back = Relay(), Relay()
    asyncio.run(relay_once(front, back))
    assert exporter.get_finished_spans() == ()
    [(front_id, front_trace)] = front.seen
    assert back.seen == [(front_id, "")] and front_trace == ""
    assert len(front_id) == 16                             # today's fresh id, forwarded


def test_off_imports_no_opentelemetry_sdk_or_instrumentation() -> None:
    code = ("import sys; from movierec import settings, tracing; "
            "from movierec.server import client, factory, runner; "
            "assert not tracing.setup('x', settings.server_settings({})); "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.')"
            " and m.split('.')[1] in ('sdk', 'instrumentation', 'exporter')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"


def test_settings_are_typed_and_checked() -> None:
    parsed = settings.load(settings.ServerSettings,
                           {"MOVIEREC_TRACE_FILE": "/tmp/t.jsonl", "MOVIEREC_TRACE_SAMPLE": "0.1"})
    assert parsed.tracing and parsed.trace_sample == 0.1
    assert not settings.ServerSettings().tracing
    with pytest.raises(settings.SettingsError, match="MOVIEREC_TRACE_SAMPLE"):
        settings.load(settings.ServerSettings, {"MOVIEREC_TRACE_SAMPLE": "1.5"})


def test_file_exporter_lines_and_the_waterfall(tmp_path: Path, capsys) -> None:
    path = tmp_path / "spans.jsonl"
    config = settings.ServerSettings(trace_file=str(path))
    for service in ("a", "b"):   # two processes appending to one file
        provider = sdk.provider(service, config)
        tracer = provider.get_tracer("t")
        with tracer.start_as_current_span("dropped"):   # not a request the gate chose
            pass
        with instrument.entry(), tracer.start_as_current_span(f"{service}.root") as root, \
                tracer.start_as_current_span(f"{service}.child", attributes={"n": 1}):
            pass
        provider.shutdown()
    records = waterfall.load(path)
    assert [(r["service"], r["name"]) for r in records] == [
        ("a", "a.child"), ("a", "a.root"), ("b", "b.child"), ("b", "b.root")]
    child, parent = records[2], records[3]
    assert child["parent_id"] == parent["span_id"] and parent["parent_id"] is None
    assert child["attributes"] == {"n": 1} and child["end_ns"] >= child["start_ns"]
    trace_id = f"{root.get_span_context().trace_id:032x}"
    out = tmp_path / "w.png"
    assert waterfall.main(["--file", str(path), "--trace-id", trace_id, "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert "  b: b.child" in capsys.readouterr().out
    assert waterfall.main(["--file", str(path), "--trace-id", "0" * 32,
                           "--out", str(out)]) == 1


# --- the real stack ------------------------------------------------------------------

SERVICES = {"gateway", "embedder", "retriever", "catalog"}


def trace_of(path: Path, trace_id: str | None, want: set[str], timeout: float = 30.0
             ) -> list[dict]:
    """The spans of ``trace_id`` (else of the newest trace) in the trace file once every
    service in ``want`` has written its server span (spans are flushed every second)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = waterfall.pick(waterfall.load(path), trace_id) if path.exists() else []
        served = {s["service"] for s in spans if s["kind"] == "SERVER"}
        if want <= served or time.monotonic() > deadline:
            return spans
        time.sleep(0.25)


@pytest.fixture(scope="module")
def traced_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str, milvus_uri: str):
    from stack_fixture import running_stack

    from movierec.stack.process import stop_process
    from movierec.stack.web import start_web

    root = tmp_path_factory.mktemp("traced-stack")
    trace_file = root / "traces.jsonl"

    def configure(env: dict[str, str], _redis) -> None:
        # every search goes to Milvus (small collections are otherwise searched in memory)
        env.update({"MOVIEREC_TRACE_FILE": str(trace_file), "MOVIEREC_LOG_LEVEL": "DEBUG",
                    "RETRIEVER_MEMORY_BELOW": "0"})
    with running_stack(root, database_url, milvus_uri, configure) as stack:
        web, url = start_web({**stack.env, "GATEWAY_ADDR": stack.gateway}, stack.logs)
        try:
            yield stack, trace_file, url
        finally:
            stop_process(web)


def recommend_user(gateway: str, user_id: int):
    from movierec.gateway.v1 import gateway_pb2 as pb
    from movierec.gateway.v1 import gateway_pb2_grpc

    async def go():
        async with grpc.aio.insecure_channel(gateway) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            return await stub.Recommend(pb.RecommendRequest(user_id=user_id, top_k=5),
                                        timeout=10)
    return asyncio.run(go())


def by_id(spans: list[dict]) -> dict[str, dict]:
    return {s["span_id"]: s for s in spans}


@pytest.mark.slow
def test_a_user_id_miss_is_one_trace_across_every_service(traced_stack) -> None:
    stack, trace_file, _ = traced_stack
    assert not recommend_user(stack.gateway, 11).cached
    spans = trace_of(trace_file, None, SERVICES)
    root = [s for s in spans if s["parent_id"] is None]
    assert len(root) == 1 and root[0]["service"] == "gateway"
    assert root[0]["name"] == "/movierec.gateway.v1.Gateway/Recommend"
    trace_id = root[0]["trace_id"]
    assert {s["service"] for s in spans} == SERVICES
    assert all(len(s["trace_id"]) == HEX32 and s["trace_id"] == trace_id for s in spans)
    parents = by_id(spans)
    for span in spans:
        if span["kind"] == "SERVER" and span["service"] != "gateway":  # a gRPC hop
            caller = parents[span["parent_id"]]
            assert (caller["service"], caller["kind"]) == ("gateway", "CLIENT")
            assert caller["name"] == span["name"]
    assert any(s["attributes"].get("db.system") == "redis" for s in spans
               if s["service"] == "gateway")
    sql = [s for s in spans if s["service"] == "catalog" and s["kind"] == "CLIENT"]
    assert sql and all(s["attributes"].get("db.system") == "postgresql" for s in sql)
    assert any("SELECT" in s["attributes"].get("db.statement", "") for s in sql)
    model = [s for s in spans if s["name"] == "embedder.model"]
    assert model and model[0]["attributes"]["movierec.input"] in ("history", "sequence")
    [search] = [s for s in spans if s["name"] == "milvus.search"]
    assert parents[search["parent_id"]]["name"] == "retriever.search"
    assert_logged(stack.logs, trace_id, SERVICES)


def assert_logged(log_dir: Path, trace_id: str, services: set[str]) -> None:
    """Each service's JSON log has a line of this request carrying the trace id."""
    for name in services:
        lines = [json.loads(line) for line in (log_dir / f"{name}.log").read_text()
                 .splitlines() if line.startswith("{")]
        assert any(line.get("request_id") == trace_id for line in lines), name


@pytest.mark.slow
def test_the_web_facade_starts_the_trace_and_answers_its_id(traced_stack) -> None:
    import httpx

    stack, trace_file, url = traced_stack
    reply = httpx.post(f"{url}/api/recommend", json={"user_id": 12, "top_k": 5}, timeout=10)
    assert reply.status_code == 200
    trace_id = reply.headers["x-request-id"]
    assert len(trace_id) == HEX32
    spans = trace_of(trace_file, trace_id, SERVICES | {"web"})
    root = [s for s in spans if s["parent_id"] is None]
    assert [(s["service"], s["kind"]) for s in root] == [("web", "SERVER")]
    hop = [s for s in spans if s["service"] == "gateway" and s["kind"] == "SERVER"][0]
    assert by_id(spans)[hop["parent_id"]]["service"] == "web"
    assert {s["service"] for s in spans} == SERVICES | {"web"}
    assert_logged(stack.logs, trace_id, {"web", "gateway"})
