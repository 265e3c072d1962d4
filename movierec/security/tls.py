"""gRPC TLS credentials from :class:`~movierec.settings.ServerSettings`.

One certificate, key and CA per process (``MOVIEREC_TLS_CERT``, ``MOVIEREC_TLS_KEY``,
``MOVIEREC_TLS_CA``), used both ways:

- as a server, the process presents its certificate; with a CA it also requires every
  client to present a certificate that CA signed (mutual TLS);
- as a client, it verifies servers with the CA (the system roots without one) and
  presents its own certificate when it has one, which mTLS servers require.

Nothing configured means plaintext, the default of ``make run``. The files are read
once at start-up; rotation is a restart (docs/security.md).
"""

from __future__ import annotations

from pathlib import Path

import grpc

from movierec.settings import ServerSettings, SettingsError


def _read(variable: str, path: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"invalid settings: {variable}={path!r}: {exc.strerror}") from None


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS (mTLS with a CA) server credentials, or None for plaintext."""
    if not settings.tls_cert:
        if settings.tls_ca:
            raise SettingsError("invalid settings: a server with MOVIEREC_TLS_CA needs "
                                "MOVIEREC_TLS_CERT and MOVIEREC_TLS_KEY")
        return None
    key = _read("MOVIEREC_TLS_KEY", settings.tls_key)
    cert = _read("MOVIEREC_TLS_CERT", settings.tls_cert)
    ca = _read("MOVIEREC_TLS_CA", settings.tls_ca)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=ca is not None)


def channel_credentials(settings: ServerSettings) -> grpc.ChannelCredentials | None:
    """TLS channel credentials (with this process' certificate as its client identity
    when it has one), or None for plaintext."""
    if not settings.tls:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read("MOVIEREC_TLS_CA", settings.tls_ca),
        private_key=_read("MOVIEREC_TLS_KEY", settings.tls_key),
        certificate_chain=_read("MOVIEREC_TLS_CERT", settings.tls_cert))
