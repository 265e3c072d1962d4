"""``movierec token``: user tokens for local use, signed with the gateway's own keys.

    movierec token --new-key > jwks.json       # a fresh HMAC key set (kid = today's date)
    export GATEWAY_AUTH_KEYS=$PWD/jwks.json GATEWAY_AUTH_REQUIRED=true
    movierec token --user 42 --ttl 2h          # prints the token
    movierec token --user 1 --admin            # an admin token (catalog and user writes)
    movierec recommend --user 42 --token "$(movierec token --user 42)"

Reads ``GATEWAY_AUTH_KEYS`` (or ``--keys``), ``GATEWAY_AUTH_AUDIENCE`` and
``GATEWAY_AUTH_ISSUER`` like the gateway, and signs with the key ``--kid`` (default:
the first of the set), which must hold its secret or private part. A real deployment
issues tokens from its identity provider; the gateway only needs the public keys.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence

from movierec import settings
from movierec.apps.gateway.server import GatewaySettings
from movierec.security import tokens

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def duration(text: str) -> int:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h`` or ``7d``."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 3600, 15m, 2h: {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="movierec token", description=__doc__.splitlines()[0])
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--user", type=int, help="the user id the token acts as (its sub)")
    kind.add_argument("--new-key", action="store_true",
                      help="print a new HMAC key set (JWKS) for GATEWAY_AUTH_KEYS")
    p.add_argument("--admin", action="store_true",
                   help="add the admin role (catalog writes, any user's profile)")
    p.add_argument("--ttl", type=duration, default=3600, help="lifetime (3600, 15m, 2h, 7d)")
    p.add_argument("--kid", help="key id to sign with (default: the first key)")
    p.add_argument("--keys", help="JWKS, inline or a file (default: GATEWAY_AUTH_KEYS)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.admin and args.new_key:
        p.error("--admin goes with --user")
    if args.new_key:
        kid = args.kid or time.strftime("%Y-%m-%d")
        print(json.dumps(tokens.new_hmac_jwks(kid), indent=2))
        return 0
    try:
        config = settings.load(GatewaySettings)
        keys = tokens.load_keys(args.keys or config.auth_keys or "")
    except (settings.SettingsError, tokens.KeySetError) as exc:
        print(f"movierec token: {exc} (set GATEWAY_AUTH_KEYS or --keys)", file=sys.stderr)
        return 2
    kid = args.kid or next(iter(keys))
    if kid not in keys:
        print(f"movierec token: no key {kid!r}; known: {', '.join(keys)}", file=sys.stderr)
        return 2
    try:
        token = tokens.issue(keys[kid], str(args.user), args.ttl, config.auth_audience,
                             config.auth_issuer, role=tokens.ADMIN if args.admin else None)
    except (TypeError, ValueError) as exc:
        print(f"movierec token: key {kid!r} cannot sign (a public key?): {exc}",
              file=sys.stderr)
        return 2
    print(token)
    return 0
