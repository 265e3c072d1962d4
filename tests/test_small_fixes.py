"""Small fixes (issue "Architecture II"): the port preflight, a failed preparation step,
client message sizes, ServerSettings parsed once, the shared deadline, metadata and
rating rules, and the echo server in the registry."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from movierec import registry
from movierec.errors import Unavailable
from movierec.stack.process import free_port
from movierec.stack.up import _port_taken, check_ports

# --- 1. the port preflight binds like the servers (SO_REUSEADDR) --------------------


def _time_wait_ports() -> set[int]:
    """Local ports of IPv4 TCP sockets in TIME_WAIT (state 06 of /proc/net/tcp)."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "06":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _leave_in_time_wait() -> int:
    """A loopback port whose only socket is a server-side connection in TIME_WAIT, left
    by a listener that set SO_REUSEADDR as the servers do (gRPC, uvicorn, the stores)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        caller = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()                    # the server side closes first ...
        assert caller.recv(1) == b""        # ... the caller sees its FIN ...
        caller.close()                      # ... and closes: the server side is TIME_WAIT
    deadline = time.monotonic() + 10
    while port not in _time_wait_ports() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert port in _time_wait_ports()
    return port


def _all_free_but(variable: str, port: int) -> dict[str, str]:
    env = {s.port_env: str(free_port()) for s in registry.SERVICES}
    env |= {s.metrics_env: "-1" for s in registry.SERVICES}
    env["MILVUS_URI"] = "http://127.0.0.1:1"      # no local Milvus port to check
    env[variable] = str(port)
    return env


def test_a_port_in_time_wait_is_free_for_the_preflight() -> None:
    port = _leave_in_time_wait()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))     # what the old preflight did: refused
    assert not _port_taken(port)
    check_ports(_all_free_but(registry.GATEWAY.port_env, port))   # does not raise


def test_a_listening_port_is_still_taken() -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert _port_taken(port)
        with pytest.raises(Unavailable, match=f"GATEWAY_PORT={port}"):
            check_ports(_all_free_but(registry.GATEWAY.port_env, port))


# --- 2. a failed preparation step ends `up` with one line, not a traceback ----------


@pytest.fixture
def failing_commands(monkeypatch):
    """Every `movierec ...` that prepare runs is a real process that exits 3; the argv
    it was asked to run is recorded."""
    import subprocess
    import sys

    from movierec.stack import prepare

    real_run = subprocess.run
    asked: list[list[str]] = []

    def run(command, **kwargs):
        asked.append(command)
        return real_run([sys.executable, "-c", "import sys; sys.exit(3)"], **kwargs)
    monkeypatch.setattr(prepare.subprocess, "run", run)
    return asked


def test_a_failed_download_is_one_clear_error(failing_commands, monkeypatch) -> None:
    from movierec.errors import MovierecError
    from movierec.stack import prepare

    monkeypatch.setattr(prepare, "locate", lambda dataset: None)
    with pytest.raises(MovierecError) as error:
        prepare.ensure_data("ml-1m")
    assert isinstance(error.value, prepare.StepFailed)
    message = str(error.value)
    assert "\n" not in message and "MOVIELENS_DIR" in message
    assert "`movierec data fetch --dataset ml-1m` exited with code 3" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__
    assert failing_commands[0][-5:] == ["movierec.cli", "data", "fetch", "--dataset", "ml-1m"]


def test_a_failed_training_is_one_clear_error(monkeypatch) -> None:
    import sys

    from movierec.errors import DataError
    from movierec.stack import prepare, training

    def no_artifact(model):
        raise DataError(f"no {model} artifact")
    monkeypatch.setattr(prepare, "latest", no_artifact)
    monkeypatch.setattr(training, "MOVIEREC", [
        sys.executable, "-c", "import sys; sys.exit(3 if 'fusion' in sys.argv else 0)"])
    from movierec.models import registry as models
    argv = " ".join(["--dataset", "ml-1m", *models.get("fusion").first_run, "--no-progress"])
    failed = (rf"^training fusion failed: `movierec train fusion {re.escape(argv)}` "
              r"exited with code 3$")
    with pytest.raises(prepare.StepFailed, match=failed), \
            prepare.ensure_models("ml-1m") as started:
        started.wait()


def test_models_train_side_by_side_and_a_failure_stops_the_others(monkeypatch, capsys,
                                                                  tmp_path) -> None:
    import os
    import sys
    import time

    from movierec.stack import training

    script = ("import os, sys, time; print('epoch 1', flush=True); "
              "open(os.path.join(sys.argv[2], sys.argv[1]), 'w').write(str(os.getpid())); "
              "time.sleep(0.5 if sys.argv[1] == 'bad' else 60); "
              "sys.exit(5 if sys.argv[1] == 'bad' else 0)")
    monkeypatch.setattr(training, "MOVIEREC", [sys.executable, "-c", script])
    commands = {name: [name, str(tmp_path)] for name in ("slow", "bad")}
    start = time.monotonic()
    with pytest.raises(training.StepFailed, match=r"^training bad failed: .* code 5$"), \
            training.Training(commands) as started:
        started.wait()
    assert time.monotonic() - start < 30
    slow = int((tmp_path / "slow").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(slow, 0)
    printed = capsys.readouterr().out
    assert "[slow] epoch 1" in printed and "[bad] epoch 1" in printed


def test_up_prints_a_failed_step_on_one_line_and_exits_1(failing_commands, monkeypatch,
                                                         capsys) -> None:
    import signal

    from movierec.stack import prepare, up

    class NoStores:
        started: dict = {}

        def start(self):
            return {"DATABASE_URL": "postgresql://x", "MILVUS_URI": "http://x"}

        def stop(self):
            pass
    monkeypatch.setattr(up, "check_ports", lambda env: None)
    monkeypatch.setattr(up, "LocalStores", NoStores)
    monkeypatch.setattr(prepare, "locate", lambda dataset: None)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert up.main(["--once"]) == 1
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("movierec up:")] == [
        "movierec up: ml-1m is not available (set MOVIELENS_DIR to a local copy, or allow "
        "the download): `movierec data fetch --dataset ml-1m` exited with code 3"]


# --- 3. client channels use MOVIEREC_MAX_MESSAGE_BYTES ------------------------------


async def _echo_sizes(max_message_bytes: int | None, sizes: list[int]) -> list[str]:
    """Echo payloads of ``sizes`` bytes through a server with the default 4 MiB limit
    over a client.channel; each call's status code name."""
    import grpc

    from movierec import settings
    from movierec.echo.v1 import echo_pb2, echo_pb2_grpc
    from movierec.server import client
    from movierec.server.echo import SERVICE, EchoServicer
    from movierec.server.factory import ServiceSpec, build_server

    spec = ServiceSpec(SERVICE, EchoServicer(), echo_pb2_grpc.add_EchoServicer_to_server)
    server, port = await build_server("echo", [spec], 0, settings.ServerSettings())
    codes = []
    try:
        async with client.channel(f"127.0.0.1:{port}", max_message_bytes) as chan:
            stub = echo_pb2_grpc.EchoStub(chan)
            for size in sizes:
                try:
                    reply = await stub.Echo(echo_pb2.EchoRequest(payload=b"x" * size),
                                            timeout=10)
                    assert len(reply.payload) == size
                    codes.append("OK")
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code().name)
    finally:
        await server.stop(0)
    return codes


def test_client_channels_take_the_configured_message_size(monkeypatch) -> None:
    import asyncio

    monkeypatch.setenv("MOVIEREC_MAX_MESSAGE_BYTES", "2048")
    assert asyncio.run(_echo_sizes(None, [1000, 4096])) == ["OK", "RESOURCE_EXHAUSTED"]
    assert asyncio.run(_echo_sizes(8192, [4096])) == ["OK"]     # an explicit size wins
    monkeypatch.delenv("MOVIEREC_MAX_MESSAGE_BYTES")
    assert asyncio.run(_echo_sizes(None, [4096])) == ["OK"]     # default: 4 MiB


# --- 4. ServerSettings parsed once per process ---------------------------------------


def test_server_settings_are_parsed_once_until_a_variable_changes(monkeypatch) -> None:
    from movierec import settings

    calls = []
    real_load = settings.load

    def load(cls, environ=None):
        calls.append(cls)
        return real_load(cls, environ)
    monkeypatch.setattr(settings, "load", load)
    settings._parsed_server_settings.cache_clear()
    monkeypatch.setenv("MOVIEREC_GRACE_SECONDS", "2.5")
    first = settings.server_settings()
    assert settings.server_settings() is first and first.grace_seconds == 2.5
    assert settings.server_settings({"MOVIEREC_GRACE_SECONDS": "2.5"}) is first
    monkeypatch.setenv("MOVIEREC_GRACE_SECONDS", "3")
    assert settings.server_settings().grace_seconds == 3.0
    monkeypatch.setenv("MOVIEREC_GRACE_SECONDS", "-1")
    with pytest.raises(settings.SettingsError, match="MOVIEREC_GRACE_SECONDS"):
        settings.server_settings()
    assert calls.count(settings.ServerSettings) == 3


PARSES = """
import asyncio, sys
from movierec import settings
from movierec.server.runner import start_process
from movierec.SERVER_MODULE import create_server, SETTINGS_CLASS

parses = []
real_load = settings.load
def load(cls, environ=None):
    if cls is settings.ServerSettings:
        parses.append(cls)
    return real_load(cls, environ)
settings.load = load

async def main():
    config, _ = start_process("NAME", SETTINGS_CLASS)
    server, _port = await create_server(config, 0)
    await server.stop(0)
asyncio.run(main())
print("parses", len(parses), file=sys.stderr)
"""


@pytest.mark.parametrize(("name", "module", "cls"), [
    ("echo", "server.echo", "EchoSettings"),
    ("gateway", "apps.gateway.server", "GatewaySettings"),   # + three backend channels
])
def test_a_service_process_parses_server_settings_once(name, module, cls) -> None:
    import os
    import subprocess
    import sys

    code = (PARSES.replace("SERVER_MODULE", module).replace("SETTINGS_CLASS", cls)
            .replace("NAME", name))
    env = {**os.environ, "MOVIEREC_MAX_MESSAGE_BYTES": "65536", "MOVIEREC_GRACE_SECONDS": "0",
           "GATEWAY_PORT": "0", "ECHO_PORT": "0", "REDIS_URL": ""}
    for variable in ("EMBEDDER_ADDR", "RETRIEVER_ADDR", "CATALOG_ADDR"):
        env[variable] = f"127.0.0.1:{free_port()}"     # nothing there
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "parses 1" in out.stderr.splitlines(), out.stderr


# --- 5. one Deadline beside call_budget -----------------------------------------------


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class _Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    from movierec.apps.gateway import backends
    from movierec.server import budget

    fake = _Clock()
    monkeypatch.setattr(budget, "time", fake)
    monkeypatch.setattr(backends, "time", fake, raising=False)
    return fake


def test_deadline_shares_one_budget_across_calls(clock: _Clock) -> None:
    from movierec.server.budget import Deadline

    deadline = Deadline.start(2.5, per_call=1.0)
    assert deadline.timeout() == 1.0 and deadline.left() == 2.5
    clock.now += 2.0
    assert deadline.timeout() == 0.5 and deadline.left() == 0.5
    clock.now += 1.0
    assert deadline.timeout() == 0.001 and deadline.left() == -0.5
    unbounded = Deadline.start(None, per_call=0.25)        # no caller deadline: 4 calls
    assert unbounded.timeout() == 0.25 and unbounded.left() == 1.0


def test_call_budget_is_one_call_of_a_deadline(clock: _Clock) -> None:
    from movierec.server.budget import MIN_SECONDS, call_budget

    assert call_budget(_Context(None), 2.0) == 2.0
    assert call_budget(_Context(0.5), 2.0) == 0.5
    assert call_budget(_Context(5.0), 2.0) == 2.0
    assert call_budget(_Context(-1.0), 2.0) == MIN_SECONDS == 0.01


def test_the_shared_deadline_answers_as_the_gateways(clock: _Clock) -> None:
    from movierec.apps.gateway import backends
    from movierec.server import budget

    for remaining, per_call in ((None, 0.3), (0.2, 1.0), (3.0, 1.0), (-0.1, 1.0)):
        ours = budget.Deadline.start(remaining, per_call)
        theirs = backends.Deadline.start(remaining, per_call)
        for _ in range(3):
            assert (ours.timeout(), ours.left()) == (theirs.timeout(), theirs.left())
            clock.now += 0.4


# --- 6. one metadata scanner -----------------------------------------------------------


class _Invocation:
    def __init__(self, *pairs: tuple[str, str]) -> None:
        self.pairs = pairs

    def invocation_metadata(self):
        return self.pairs

    def peer(self) -> str:
        return "ipv4:10.0.0.9:5000"


def test_first_is_the_first_non_empty_value() -> None:
    import grpc

    from movierec.server.metadata import first

    pairs = [("x-request-id", ""), ("other", "no"), ("x-request-id", "abc"),
             ("x-request-id", "later")]
    assert first(pairs, "x-request-id") == "abc"
    assert first(pairs, "missing") == "" and first(None, "x-request-id") == ""
    assert first(grpc.aio.Metadata(("authorization", "Bearer t")), "authorization") == "Bearer t"


def test_the_interceptor_and_client_read_metadata_through_it() -> None:
    from movierec.server.client import RETRY_KEY, budget_for
    from movierec.server.interceptor import _incoming_request_id

    assert _incoming_request_id(_Invocation(("x-request-id", ""), ("x-request-id", "r1"))) == "r1"
    assert _incoming_request_id(_Invocation(("x-request-id", "r" * 100))) == "r" * 64
    generated = _incoming_request_id(_Invocation(("x-request-id", "")))
    assert len(generated) == 16 and int(generated, 16) >= 0
    assert budget_for([("a", "b"), (RETRY_KEY, "1")]).spent
    assert not budget_for([("a", "b")]).spent and not budget_for(None).spent


def test_the_guard_reads_the_forwarded_address_through_it() -> None:
    import asyncio

    from movierec.apps.gateway.guard import SERVICE, Guard, networks

    class Limiter:
        who: list[str] = []

        async def take(self, who: str) -> None:
            self.who.append(who)
    limiter = Limiter()
    guard = Guard(None, limiter, networks("10.0.0.0/8"))
    asyncio.run(guard(f"/{SERVICE}/ListGenres", None, _Invocation(
        ("x-forwarded-for", ""), ("x-forwarded-for", "203.0.113.7"))))
    asyncio.run(guard(f"/{SERVICE}/ListGenres", None, _Invocation()))
    assert limiter.who == ["addr:203.0.113.7", "addr:10.0.0.9"]


# --- 7. one rating rule, one profile rule ---------------------------------------------


def test_one_rating_rule_and_message() -> None:
    from movierec import validation
    from movierec.errors import InvalidArgument

    assert [validation.rating("rating", v) for v in (1, 3, 5)] == [1, 3, 5]
    for value in (0, 6, -2):
        with pytest.raises(InvalidArgument, match=f"^rating: must be between 1 and 5, "
                                                  f"got {value}$"):
            validation.rating("rating", value)


def test_the_catalog_rejects_a_rating_with_the_rule() -> None:
    import asyncio

    from movierec.catalog.v1 import catalog_pb2
    from movierec.errors import InvalidArgument
    from movierec.services.catalog.servicer import CatalogServicer

    class NoStore:
        async def record_rating(self, *args):
            raise AssertionError("an invalid rating reached the store")
    servicer = CatalogServicer(NoStore(), 1.0)
    request = catalog_pb2.RecordRatingRequest(user_id=1, movie_id=2, rating=6)
    with pytest.raises(InvalidArgument, match="^rating: must be between 1 and 5, got 6$"):
        asyncio.run(servicer.RecordRating(request, None))


def test_the_embedder_rejects_a_history_rating_with_the_same_message() -> None:
    from movierec.common.v1 import common_pb2
    from movierec.embedder.v1 import embedder_pb2
    from movierec.errors import InvalidArgument
    from movierec.services.embedder.servicer import history_of

    def history(*ratings: int):
        ids = list(range(1, len(ratings) + 1))
        return embedder_pb2.EmbedHistoryRequest(history=common_pb2.RatedMovies(
            movie_ids=ids, ratings=list(ratings), timestamps=ids))
    assert list(history_of(history(1, 5, 3)).ratings) == [1, 5, 3]
    for ratings, bad in (((4, 7, 0), 7), ((0, 3), 0)):
        with pytest.raises(InvalidArgument, match=f"^history.ratings: must be between 1 and "
                                                  f"5, got {bad}$"):
            history_of(history(*ratings))


def test_one_profile_rule() -> None:
    import numpy as np

    from movierec import validation
    from movierec.errors import InvalidArgument

    validation.profile("profile", 25, "F", 4)
    validation.profile("", np.int64(25), "M", np.int32(20), np.int64(7))
    cases = [(("profile", 0, "F", 4), "profile.age: must be 1-120 years, got 0"),
             (("", True, "F", 4), "age: must be 1-120 years, got True"),
             (("profile", 25, "X", 4), "profile.gender: must be 'M' or 'F', got 'X'"),
             (("profile", 25, "F", 21), "profile.occupation: must be 0-20, got 21"),
             (("", 25, "F", 4.0), "occupation: must be 0-20, got 4.0"),
             (("profile", 25, "F", 4, 0), "profile.user_id: must be between 1 and"),
             (("", 25, "F", 4, "7"), "user_id: must be an integer, got '7'")]
    for args, message in cases:
        with pytest.raises(InvalidArgument) as error:
            validation.profile(*args)
        assert str(error.value).startswith(message), str(error.value)


# --- 8. the echo server is a registry tool ---------------------------------------------


def test_echo_is_a_registry_tool_that_up_does_not_start() -> None:
    from movierec.stack import up

    assert registry.ECHO in registry.TOOLS and registry.ECHO not in registry.SERVICES
    assert "echo" not in registry.BY_NAME
    assert registry.ECHO not in up.GRPC_SERVICES
    assert set(registry.SERVICES).isdisjoint(registry.TOOLS)


def test_serve_echo_runs_the_registry_entry(monkeypatch) -> None:
    from movierec import cli

    assert cli.COMMANDS["serve"][1]["echo"] == registry.ECHO.entry == "movierec.server.echo:main"
    resolved: list[str] = []

    def resolve(spec):
        resolved.append(spec)
        return lambda rest: 0
    monkeypatch.setattr(cli, "resolve", resolve)
    assert cli.main(["serve", "echo", "--port", "0"]) == 0
    assert resolved == [registry.ECHO.entry]


@pytest.mark.parametrize("tool", registry.TOOLS, ids=lambda s: s.name)
def test_tool_entries_are_real(tool: registry.Service) -> None:
    import importlib

    module = importlib.import_module(tool.module)
    assert callable(module.main) and callable(module.create_server)
    config = getattr(module, tool.settings_class)
    fields = {f.metadata["env"]: f.default for f in config.__dataclass_fields__.values()}
    assert fields == {tool.port_env: tool.port, tool.metrics_env: tool.metrics_port}
    assert (Path(__file__).resolve().parent.parent / tool.folder / "__init__.py").is_file()
    package, _, name = tool.health.rpartition(".")
    pb2 = importlib.import_module(f"{package}.{name.lower()}_pb2")
    assert pb2.DESCRIPTOR.services_by_name[name].full_name == tool.health == module.SERVICE


@pytest.mark.parametrize("model", ["fusion", "pinsage", "sasrec"])
def test_every_first_run_is_a_valid_train_command(model) -> None:
    """``make run``'s first-start arguments (registry ``first_run``) parse as
    ``movierec train MODEL`` arguments: a typo there would only show on a fresh machine."""
    from movierec.models import registry as models
    from movierec.models.cli import parser_for
    parser, _ = parser_for("train", model)
    args = parser.parse_args(["--dataset", "ml-1m", *models.get(model).first_run,
                              "--no-progress"])
    assert args.dataset == "ml-1m"
    if model == "sasrec":
        assert args.gaps is False and args.dim == 64 and args.split == "leave_last_out"
