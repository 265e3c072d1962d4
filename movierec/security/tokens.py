"""Signed user tokens: JWTs verified against a JSON Web Key Set, with PyJWT.

Keys come as a JWKS (RFC 7517), inline JSON or the path of a file holding it. Every key
needs a ``kid``; a token names the key that signed it in its header, which is how
several keys are accepted at once while one is rotated out (docs/security.md). Each
key has exactly one algorithm, from its ``alg`` or its type (``oct``: HS256, ``RSA``:
RS256, ``EC``: ES256, ``OKP``: EdDSA), and a token signed with any other is refused, so
a public RSA key can never be used as an HMAC secret.

A valid token carries ``sub`` (the user id), ``aud``, ``iss`` and ``exp``; audience and
issuer must match the configured ones. An optional ``role`` claim grants more than acting
as ``sub``: ``"admin"`` (catalog writes, any user's profile; gateway/guard.py); a role
that is not one of :data:`ROLES` makes the token invalid. Every failure is
:class:`Unauthenticated` with a message that says what was wrong without echoing the
token.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from movierec.errors import Unauthenticated

ALGORITHMS = {"oct": "HS256", "RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}
LEEWAY_SECONDS = 30          # clock skew tolerated on exp / nbf / iat
REQUIRED_CLAIMS = ["exp", "sub", "aud", "iss"]
ADMIN = "admin"
ROLES = (ADMIN,)             # the values a token's optional ``role`` claim may take
_FAILURES: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.InvalidAudienceError, "token audience is not accepted"),
    (jwt.InvalidIssuerError, "token issuer is not accepted"),
    (jwt.MissingRequiredClaimError, "token lacks a required claim (sub, aud, iss, exp)"),
    (jwt.ImmatureSignatureError, "token not valid yet"),
    (jwt.InvalidSignatureError, "token signature is invalid"),
]


class KeySetError(ValueError):
    """The key set cannot be used (bad JSON, a key without kid, an unknown type)."""


def load_keys(value: str) -> dict[str, jwt.PyJWK]:
    """``{kid: key}`` from a JWKS given inline (JSON) or as a file path."""
    try:
        text = value if value.lstrip().startswith("{") else Path(value).read_text()
        entries = json.loads(text)["keys"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeySetError(f"not a JWKS (inline JSON or a file): {type(exc).__name__}") from None
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if not kid or kid in keys:
            raise KeySetError("every key needs its own kid")
        algorithm = entry.get("alg") or ALGORITHMS.get(entry.get("kty", ""))
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm=algorithm)
        except jwt.PyJWTError as exc:
            raise KeySetError(f"key {kid!r}: {exc}") from None
    if not keys:
        raise KeySetError("the key set is empty")
    return keys


def _verifying_key(key: jwt.PyJWK) -> Any:
    """The public half of an asymmetric key (a JWKS may carry private keys too)."""
    public = getattr(key.key, "public_key", None)
    return public() if callable(public) else key.key


@dataclass(frozen=True)
class Identity:
    """Who a valid token speaks for: its subject (a user id) and its role (None: none)."""

    subject: str
    role: str | None = None

    @property
    def admin(self) -> bool:
        return self.role == ADMIN


class Verifier:
    """Checks tokens against a key set, audience and issuer."""

    def __init__(self, keys: dict[str, jwt.PyJWK], audience: str, issuer: str) -> None:
        self.keys = {kid: (k.algorithm_name, _verifying_key(k)) for kid, k in keys.items()}
        self.audience = audience
        self.issuer = issuer

    def subject(self, token: str) -> str:
        """The token's ``sub``; :class:`Unauthenticated` when it is not valid."""
        return self.identity(token).subject

    def identity(self, token: str) -> Identity:
        """The token's ``sub`` and ``role``; :class:`Unauthenticated` when it is not valid
        (a ``role`` outside :data:`ROLES` included)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("token is malformed") from None
        found = self.keys.get(str(header.get("kid")))
        if found is None:
            raise Unauthenticated("token key id (kid) is unknown")
        algorithm, key = found
        if header.get("alg") != algorithm:
            raise Unauthenticated("token algorithm does not match its key")
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], audience=self.audience,
                                issuer=self.issuer, leeway=LEEWAY_SECONDS,
                                options={"require": REQUIRED_CLAIMS})
        except jwt.PyJWTError as exc:
            message = next((text for kind, text in _FAILURES if isinstance(exc, kind)),
                           "token is invalid")
            raise Unauthenticated(message) from None
        role = claims.get("role")
        if role is not None and role not in ROLES:
            raise Unauthenticated("token role is not accepted")
        return Identity(str(claims["sub"]), role)


def issue(key: jwt.PyJWK, subject: str, ttl: float, audience: str, issuer: str,
          now: float | None = None, role: str | None = None) -> str:
    """A token for ``subject`` valid ``ttl`` seconds, signed with ``key`` (its kid set),
    with the ``role`` claim when one is given (one of :data:`ROLES`)."""
    if role is not None and role not in ROLES:
        raise ValueError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    issued = int(time.time() if now is None else now)
    claims = {"sub": subject, "aud": audience, "iss": issuer, "iat": issued,
              "exp": issued + int(ttl), **({"role": role} if role else {})}
    return jwt.encode(claims, key.key, algorithm=key.algorithm_name,
                      headers={"kid": key.key_id})


def new_hmac_jwks(kid: str) -> dict[str, Any]:
    """A fresh JWKS holding one random 256-bit HMAC key."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return {"keys": [{"kty": "oct", "kid": kid, "alg": "HS256", "k": secret}]}
