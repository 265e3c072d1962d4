"""Who may call the public API, and how often: the one place the gateway checks callers.

:class:`Guard` is the server's ``admit`` hook (:mod:`movierec.server.interceptor`): it
sees every unary call of the ``Gateway`` service (never health or reflection) with its
request, before the servicer does.

1. **Authentication.** A call may carry ``authorization: Bearer <JWT>``; with auth on,
   a token that is present must be valid (UNAUTHENTICATED otherwise: malformed,
   expired, bad signature, unknown kid, wrong audience or issuer). With auth off,
   tokens are ignored.
2. **Rate limit.** One token bucket per client (:mod:`.ratelimit`): the token's
   subject when it is valid, else the caller's address: the peer's, or, when the peer
   is one of ``GATEWAY_TRUSTED_PROXIES`` (the web facade, an ingress), the right-most
   address of ``x-forwarded-for`` that is not itself a trusted proxy.
3. **Authorization**, by :data:`POLICY`: the requests that act as a user (write their
   ratings, read their history) need a token whose subject is that user id; the writes
   (movies, users' profiles, deleting a user) need an admin token (the ``role`` claim,
   :mod:`movierec.security.tokens`) or, where the request names a user, that user's own
   token. UNAUTHENTICATED without a token, PERMISSION_DENIED with one that does not
   cover the request. Everything else (profiles without a user id, liked ids, similar
   movies, search, lists) stays anonymous. With auth off, everything is open.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from movierec.apps.gateway import kinds
from movierec.apps.gateway.ratelimit import RateLimiter
from movierec.errors import PermissionDenied, Unauthenticated
from movierec.gateway.v1 import gateway_pb2
from movierec.security.tokens import Identity, Verifier
from movierec.server.metadata import first

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
AUTHORIZATION = "authorization"
FORWARDED_FOR = "x-forwarded-for"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _recommend_user(request: gateway_pb2.RecommendRequest) -> int | None:
    """The user a Recommend request acts as: its query kind's rule (:mod:`.kinds`)."""
    kind = kinds.BY_CASE.get(request.WhichOneof("query") or "")
    return kind.owner(request) if kind is not None else None


def _named_user(request: Any) -> int | None:
    """The user a write names (its ``user_id``; None for 0: a sign-up names nobody)."""
    return request.user_id or None


def _nobody(request: Any) -> None:
    return None


@dataclass(frozen=True)
class Rule:
    """Who may call one method. ``user(request)``: the user id the request acts as, whose
    own token it needs (None: nobody's). ``admin``: an admin token may call it, and some
    token always must: an admin's, or the named user's own."""

    user: Callable[[Any], int | None] = _nobody
    admin: bool = False


#: Method -> its rule; a method not listed is anonymous. The one policy.
POLICY: dict[str, Rule] = {
    "Recommend": Rule(_recommend_user),                # per query kind
    "RecordRating": Rule(lambda request: request.user_id),
    "UpsertMovies": Rule(admin=True),                  # admins only
    "UpsertUser": Rule(_named_user, admin=True),       # admin, or the user themself
    "DeleteUser": Rule(_named_user, admin=True),       # admin, or the user themself
}


def authorize(name: str, rule: Rule, request: Any, identity: Identity | None) -> None:
    """Raise unless ``identity`` (None: no token) may make ``request`` under ``rule``."""
    owner = rule.user(request)
    if owner is None and not rule.admin:
        return
    if identity is None:
        needs = ("needs an admin token" if owner is None else
                 "for a user id needs an admin token or that user's token" if rule.admin
                 else "for a user id needs that user's token")
        raise Unauthenticated(f"{name} {needs} (authorization: Bearer <token>)")
    if (rule.admin and identity.admin) or (owner is not None and identity.subject == str(owner)):
        return
    if owner is None:
        raise PermissionDenied(f"{name} needs an admin token")
    raise PermissionDenied(f"the token is for user {identity.subject}, not user {owner}")


def networks(text: str) -> tuple[Network, ...]:
    """``GATEWAY_TRUSTED_PROXIES``: comma-separated addresses or CIDR networks."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False)
                 for part in text.split(",") if part.strip())


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string (``ipv4:10.0.0.1:5000``, ``ipv6:[::1]:5000``)."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer


def client_address(peer: str, forwarded: str, trusted: Sequence[Network]) -> str:
    """The caller's address: the peer, unless the peer is a trusted proxy; then the
    right-most ``x-forwarded-for`` hop that is not a trusted proxy."""
    host = peer_host(peer)
    address = _address(host)
    if not forwarded or address is None or not any(address in n for n in trusted):
        return host
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        hop_address = _address(hop)
        if hop_address is None or not any(hop_address in n for n in trusted):
            return hop[:64]
    return hops[0][:64] if hops else host


class Guard:
    """The gateway's ``admit`` hook: authentication, rate limit, then :data:`POLICY`."""

    def __init__(self, verifier: Verifier | None, limiter: RateLimiter | None,
                 trusted_proxies: Sequence[Network] = ()) -> None:
        self.verifier = verifier
        self.limiter = limiter
        self.trusted = tuple(trusted_proxies)

    def _authenticate(self, context) -> tuple[Identity | None, Unauthenticated | None]:
        """(valid token's identity, or the problem with the token that was sent)."""
        header = first(context.invocation_metadata(), AUTHORIZATION)
        if self.verifier is None or not header:
            return None, None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, Unauthenticated("authorization must be 'Bearer <token>'")
        try:
            return self.verifier.identity(token.strip()), None
        except Unauthenticated as problem:
            return None, problem

    async def __call__(self, method: str, request: Any,
                       context: grpc.aio.ServicerContext) -> None:
        service, _, name = method.strip("/").rpartition("/")
        if service != SERVICE:
            return
        identity, problem = self._authenticate(context)
        if self.limiter is not None:
            who = (f"user:{identity.subject}" if identity is not None else "addr:" +
                   client_address(context.peer(),
                                  first(context.invocation_metadata(), FORWARDED_FOR),
                                  self.trusted))
            await self.limiter.take(who)
        if problem is not None:
            raise problem
        if name in POLICY and self.verifier is not None:
            authorize(name, POLICY[name], request, identity)
