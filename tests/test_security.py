"""Security primitives in-process: signed tokens, TLS and mTLS, the plaintext health port.

Tokens are checked against every way one can be wrong (expired, another key, another
audience or issuer, an unknown kid, an algorithm its key does not have); TLS with
certificates made here (tests/certs.py) against plaintext, wrong-CA and certificate-less
clients. The gateway's guard (authorization policy, rate limit) is in
tests/test_gateway_guard.py, the four services with all of it on in
tests/test_security_stack.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from pathlib import Path

import grpc
import jwt
import pytest
from certs import Authority
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from movierec import settings
from movierec.echo.v1 import echo_pb2, echo_pb2_grpc
from movierec.errors import Unauthenticated
from movierec.security import tls, tokens
from movierec.server import client
from movierec.server.echo import SERVICE, EchoServicer
from movierec.server.factory import ServiceSpec, build_server

AUD, ISS = "movierec", "movierec"


def hmac_keys(*kids: str) -> dict[str, jwt.PyJWK]:
    entries = [tokens.new_hmac_jwks(kid)["keys"][0] for kid in kids]
    return tokens.load_keys(json.dumps({"keys": entries}))


def verifier(keys: dict[str, jwt.PyJWK]) -> tokens.Verifier:
    return tokens.Verifier(keys, AUD, ISS)


def test_a_valid_token_names_its_user_and_either_of_two_keys_works() -> None:
    keys = hmac_keys("2026-01", "2026-04")   # rotation: old and new accepted together
    check = verifier(keys)
    assert check.subject(tokens.issue(keys["2026-01"], "42", 60, AUD, ISS)) == "42"
    assert check.subject(tokens.issue(keys["2026-04"], "7", 60, AUD, ISS)) == "7"


@pytest.mark.parametrize(("make", "message"), [
    (lambda k, o: tokens.issue(k, "42", 60, AUD, ISS, now=1_000_000), "expired"),
    (lambda k, o: tokens.issue(o, "42", 60, AUD, ISS), "signature"),
    (lambda k, o: tokens.issue(k, "42", 60, "someone-else", ISS), "audience"),
    (lambda k, o: tokens.issue(k, "42", 60, AUD, "evil"), "issuer"),
    (lambda k, o: jwt.encode({"sub": "42", "aud": AUD, "iss": ISS}, k.key, "HS256",
                             headers={"kid": "k"}), "claim"),
    (lambda k, o: jwt.encode({"sub": "42"}, "x", "HS256", headers={"kid": "nope"}), "kid"),
    (lambda k, o: "not.a.token", "malformed"),
    (lambda k, o: jwt.encode({"sub": "42", "aud": AUD, "iss": ISS, "exp": 2**40}, k.key,
                             "HS512", headers={"kid": "k"}), "algorithm"),
])
def test_bad_tokens_are_unauthenticated(make, message: str) -> None:
    keys = hmac_keys("k")
    other = hmac_keys("k")["k"]     # same kid, another secret
    with pytest.raises(Unauthenticated, match=message):
        verifier(keys).subject(make(keys["k"], other))


@pytest.mark.parametrize("private", [
    rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ed25519.Ed25519PrivateKey.generate()], ids=["RS256", "EdDSA"])
def test_public_keys_verify_and_cannot_be_used_as_hmac_secrets(private) -> None:
    algorithm = "RS256" if isinstance(private, rsa.RSAPrivateKey) else "EdDSA"
    signer = jwt.PyJWK(json.loads(jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(
        private)) | {"kid": "a"}, algorithm=algorithm)
    public = json.loads(jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(
        private.public_key())) | {"kid": "a"}
    check = verifier(tokens.load_keys(json.dumps({"keys": [public]})))
    assert check.subject(tokens.issue(signer, "5", 60, AUD, ISS)) == "5"
    with pytest.raises(Unauthenticated, match="algorithm"):
        check.subject(hs256_by_hand({"sub": "5", "aud": AUD, "iss": ISS, "exp": 2**40},
                                    json.dumps(public).encode(), kid="a"))


def hs256_by_hand(claims: dict, secret: bytes, kid: str) -> str:
    """An HS256 token keyed with anything (PyJWT itself refuses public keys as secrets)."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    head = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = part(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(mac)}"


@pytest.mark.parametrize("jwks", ["", "{}", '{"keys": []}', '{"keys": [{"kty": "oct"}]}',
                                  "/no/such/file.json", '{"keys": [{"kty": "?", "kid": "a"}]}'])
def test_unusable_key_sets_are_refused(jwks: str) -> None:
    with pytest.raises(tokens.KeySetError):
        tokens.load_keys(jwks)


# --- TLS ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    root = tmp_path_factory.mktemp("pki")
    ca = Authority.new("movierec test CA")
    return {"server": ca.issue_files(root / "server", "server"),
            "client": ca.issue_files(root / "client", "client"),
            "stranger": Authority.new("another CA").issue_files(root / "other", "client")}


def identity(files: dict[str, str], ca: str | None = None) -> settings.ServerSettings:
    return settings.ServerSettings(tls_cert=files["cert"], tls_key=files["key"],
                                   tls_ca=ca or files["ca"])


async def _echo(port: int, credentials) -> grpc.StatusCode:
    async with client.channel(f"127.0.0.1:{port}", credentials=credentials) as channel:
        try:
            await echo_pb2_grpc.EchoStub(channel).Echo(echo_pb2.EchoRequest(payload=b"x"),
                                                       timeout=3)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_mtls_serves_clients_of_its_ca_only(pki) -> None:
    async def scenario() -> dict[str, grpc.StatusCode]:
        spec = ServiceSpec(SERVICE, EchoServicer(), echo_pb2_grpc.add_EchoServicer_to_server)
        server, port = await build_server("tls", [spec], 0, identity(pki["server"]))
        clients = {
            "mtls": identity(pki["client"]),
            "no client certificate": settings.ServerSettings(tls_ca=pki["client"]["ca"]),
            "wrong CA": identity(pki["stranger"]),
            "foreign certificate": identity(pki["stranger"], ca=pki["client"]["ca"]),
            "plaintext": settings.ServerSettings()}
        try:
            return {name: await _echo(port, tls.channel_credentials(s))
                    for name, s in clients.items()}
        finally:
            await server.stop(0)
    codes = asyncio.run(scenario())
    assert codes.pop("mtls") == grpc.StatusCode.OK
    assert set(codes.values()) == {grpc.StatusCode.UNAVAILABLE}, codes


def test_the_health_port_is_plaintext_and_health_only(pki) -> None:
    async def scenario():
        spec = ServiceSpec(SERVICE, EchoServicer(), echo_pb2_grpc.add_EchoServicer_to_server)
        config = identity(pki["server"])
        health_port = free_port()
        config = settings.ServerSettings(**{**vars(config), "health_port": health_port})
        server, _port = await build_server("tls", [spec], 0, config)
        try:
            await server.readiness.set_serving(True)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
                status = (await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="liveness"), timeout=3)).status
            return status, await _echo(health_port, None)
        finally:
            await server.stop(0)
    status, echo_code = asyncio.run(scenario())
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert echo_code == grpc.StatusCode.UNIMPLEMENTED


def test_tls_settings_problems_are_reported(pki, tmp_path: Path) -> None:
    with pytest.raises(settings.SettingsError, match="MOVIEREC_TLS_CERT"):
        tls.server_credentials(settings.ServerSettings(tls_ca=pki["client"]["ca"]))
    missing = settings.ServerSettings(tls_cert=str(tmp_path / "none.crt"),
                                      tls_key=str(tmp_path / "none.key"))
    with pytest.raises(settings.SettingsError, match="none.key"):
        tls.server_credentials(missing)


def free_port() -> int:
    from movierec.stack.process import free_port as pick

    return pick()


def test_movierec_token_issues_what_the_gateway_accepts(capsys, monkeypatch) -> None:
    from movierec import cli

    assert cli.main(["token", "--new-key", "--kid", "local"]) == 0
    jwks = capsys.readouterr().out
    monkeypatch.setenv("GATEWAY_AUTH_KEYS", jwks)
    assert cli.main(["token", "--user", "42", "--ttl", "2h"]) == 0
    issued = capsys.readouterr().out.strip()
    assert verifier(tokens.load_keys(jwks)).subject(issued) == "42"
    assert jwt.decode(issued, options={"verify_signature": False})["exp"] - jwt.decode(
        issued, options={"verify_signature": False})["iat"] == 7200
    assert cli.main(["token", "--user", "42", "--kid", "other"]) == 2
    monkeypatch.delenv("GATEWAY_AUTH_KEYS")
    assert cli.main(["token", "--user", "42"]) == 2
    assert "GATEWAY_AUTH_KEYS" in capsys.readouterr().err
