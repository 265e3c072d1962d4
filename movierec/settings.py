"""Typed settings read once from environment variables; bad values fail fast.

A service declares a frozen dataclass whose fields carry their variable name::

    @dataclass(frozen=True)
    class CatalogSettings:
        database_url: str = setting("DATABASE_URL", "", secret=True)
        port: int = setting("CATALOG_PORT", 50053, minimum=0, maximum=65535)

and calls ``load(CatalogSettings)``. Every bad variable is reported at once in one
:class:`SettingsError`; ``describe`` renders the values with secrets masked for logs.
The settings every process shares, :class:`ServerSettings`, are read through
:func:`server_settings`, which parses them once per process.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints
from urllib.parse import unquote

if TYPE_CHECKING:
    from movierec.registry import Service

T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: ``scheme://user:password@`` (user may be empty; the password may hold a raw "@").
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:/?#@\s]*:)[^/?#\s]*@", re.I)
#: ``password=...`` in a query string (``?password=``, ``&sslpassword=``) or a libpq
#: key/value DSN (``password=x``, ``password='a b'``), and the usual token keys.
_KEY_VALUE = re.compile(
    r"(\b(?:ssl)?(?:password|passwd|pwd|secret|token|api_?key|access_?key|secret_?key)"
    r"\s*=\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^&\s;,]*)", re.I)
#: What tells a structured secret (URL or DSN) from an opaque one (a key, a token).
_STRUCTURED = re.compile(r"://|\b(?:host|hostaddr|dbname|user|port|service)\s*=", re.I)
MIN_REDACTED = 4   # shorter secret values are not searched for in log text


class SettingsError(ValueError):
    """One or more environment variables hold values that cannot be used."""


def setting(env: str, default: Any, *, minimum: float | None = None,
            maximum: float | None = None, choices: tuple[str, ...] | None = None,
            secret: bool = False, doc: str = "") -> Any:
    """A dataclass field bound to environment variable ``env``."""
    meta = {"env": env, "min": minimum, "max": maximum, "choices": choices, "secret": secret,
            "doc": doc}
    return dataclasses.field(default=default, metadata=meta)


def port(service: Service) -> Any:
    """``<PREFIX>_PORT`` with the registry's default."""
    return setting(service.port_env, service.port, minimum=0, maximum=65535,
                   doc=f"{service.name} {service.protocol} port")


def metrics_port(service: Service) -> Any:
    """``<PREFIX>_METRICS_PORT`` with the registry's default (-1 turns metrics off)."""
    return setting(service.metrics_env, service.metrics_port, minimum=-1, maximum=65535,
                   doc=f"{service.name} Prometheus metrics port (-1 off)")


def address(service: Service) -> Any:
    """``<PREFIX>_ADDR``: where another process reaches ``service`` (host:port)."""
    return setting(service.addr_env, service.address,
                   doc=f"{service.name} address (host:port)")


def _convert(raw: str, kind: type, meta: Mapping[str, Any]) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered not in _TRUE | _FALSE:
            raise ValueError("expected true/false")
        return lowered in _TRUE
    value = kind(raw.strip()) if kind in (int, float) else raw
    if meta["min"] is not None and value < meta["min"]:
        raise ValueError(f"must be >= {meta['min']}")
    if meta["max"] is not None and value > meta["max"]:
        raise ValueError(f"must be <= {meta['max']}")
    if meta["choices"] and value not in meta["choices"]:
        raise ValueError(f"must be one of {', '.join(meta['choices'])}")
    return value


def load(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from ``environ`` (default ``os.environ``); raise SettingsError if bad."""
    environ = os.environ if environ is None else environ
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field in dataclasses.fields(cls):
        name = field.metadata["env"]
        if name not in environ or environ[name] == "":
            continue
        try:
            values[field.name] = _convert(environ[name], hints[field.name], field.metadata)
        except ValueError as exc:
            shown = "***" if field.metadata["secret"] else repr(environ[name])
            problems.append(f"{name}={shown}: {exc}")
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    return cls(**values)


def mask_text(text: str) -> str:
    """``text`` with every URL password and ``password=`` style value replaced by ***."""
    return _KEY_VALUE.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def mask(value: Any) -> str:
    """A secret's log form: URLs and DSNs keep everything but their passwords (every form:
    ``redis://:pw@h``, ``rediss://u:pw@h``, ``?password=``, ``password=...``); opaque
    secrets (keys, tokens) vanish whole."""
    text = str(value)
    if not text:
        return ""
    return mask_text(text) if _STRUCTURED.search(text) else "***"


def secret_values(value: Any) -> list[str]:
    """The substrings of a secret setting that must never reach a log: the whole value
    when it is opaque, else each password in it (as written and URL-decoded)."""
    text = str(value)
    if not _STRUCTURED.search(text):
        parts = [text]
    else:
        parts = [m.group(0).rsplit(":", 1)[1][:-1] for m in _URL_PASSWORD.finditer(text)]
        parts += [m.group(2).strip("'\"") for m in _KEY_VALUE.finditer(text)]
    found = {p for part in parts for p in (part, unquote(part))}
    return sorted(p for p in found if len(p) >= MIN_REDACTED)


def describe(settings: Any) -> dict[str, Any]:
    """Settings as ``{ENV_NAME: value}`` with secrets masked, for start-up logs."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        out[field.metadata["env"]] = mask(value) if field.metadata["secret"] else value
    return out


def secrets(settings: Any) -> list[str]:
    """Every secret substring of a settings object (see :func:`secret_values`)."""
    return sorted({s for field in dataclasses.fields(settings) if field.metadata["secret"]
                   for s in secret_values(getattr(settings, field.name))})


def variables(cls: type) -> dict[str, str]:
    """``{ENV_NAME: doc}`` for a settings class (README tables, manifest checks)."""
    return {f.metadata["env"]: f.metadata["doc"] for f in dataclasses.fields(cls)}


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """What every gRPC service process reads."""

    host: str = setting("MOVIEREC_HOST", "127.0.0.1", doc="address the gRPC servers bind")
    log_level: str = setting("MOVIEREC_LOG_LEVEL", "INFO",
                             choices=("DEBUG", "INFO", "WARNING", "ERROR"), doc="log level")
    grace_seconds: float = setting("MOVIEREC_GRACE_SECONDS", 5.0, minimum=0, maximum=120,
                                   doc="SIGTERM drain time before in-flight calls are cancelled")
    max_message_bytes: int = setting("MOVIEREC_MAX_MESSAGE_BYTES", 4 * 1024 * 1024,
                                     minimum=1024, maximum=64 * 1024 * 1024,
                                     doc="largest gRPC message accepted or sent")
    tls_cert: str = setting("MOVIEREC_TLS_CERT", "",
                            doc="PEM certificate (chain) of this process: served, and shown "
                                "as its client identity (mTLS)")
    tls_key: str = setting("MOVIEREC_TLS_KEY", "", doc="PEM private key of MOVIEREC_TLS_CERT")
    tls_ca: str = setting("MOVIEREC_TLS_CA", "",
                          doc="PEM CA bundle: servers require client certificates it signed "
                              "(mTLS), clients verify servers with it")
    health_port: int = setting("MOVIEREC_HEALTH_PORT", -1, minimum=-1, maximum=65535,
                               doc="plaintext port serving only the gRPC health service "
                                   "(Kubernetes probes under TLS; -1 off)")
    trace_endpoint: str = setting("MOVIEREC_TRACE_ENDPOINT", "",
                                  doc="OTLP/gRPC collector the spans go to (http://host:4317 "
                                      "plaintext, https:// TLS); tracing is off while this "
                                      "and MOVIEREC_TRACE_FILE are empty")
    trace_file: str = setting("MOVIEREC_TRACE_FILE", "",
                              doc="file every finished span is appended to as a JSON line "
                                  "(processes may share one)")
    trace_sample: float = setting("MOVIEREC_TRACE_SAMPLE", 1.0, minimum=0.0, maximum=1.0,
                                  doc="share of new traces recorded (a caller's decision "
                                      "is followed: ParentBased(TraceIdRatioBased))")

    def __post_init__(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("invalid settings: MOVIEREC_TLS_CERT and MOVIEREC_TLS_KEY "
                                "go together")

    @property
    def tls(self) -> bool:
        """Whether gRPC connections of this process use TLS (as server and as client)."""
        return bool(self.tls_cert or self.tls_ca)

    @property
    def tracing(self) -> bool:
        """Whether this process records traces (an OTLP endpoint or a trace file is set)."""
        return bool(self.trace_endpoint or self.trace_file)


#: The variables :class:`ServerSettings` reads, in field order.
_SERVER_VARIABLES = tuple(variables(ServerSettings))


def server_settings(environ: Mapping[str, str] | None = None) -> ServerSettings:
    """This process' :class:`ServerSettings` from ``environ`` (default ``os.environ``),
    parsed once: the runner's start-up check, ``create_server`` and every client channel
    share one object. Parsed again only when one of its variables changed (tests)."""
    environ = os.environ if environ is None else environ
    return _parsed_server_settings(tuple(environ.get(name, "") for name in _SERVER_VARIABLES))


@functools.lru_cache(maxsize=8)
def _parsed_server_settings(values: tuple[str, ...]) -> ServerSettings:
    return load(ServerSettings, dict(zip(_SERVER_VARIABLES, values, strict=True)))
