"""Test certificates made on the spot with ``cryptography``: a CA and the leaves it signs.

    ca = Authority.new("movierec test CA")
    files = ca.issue_files(tmp_path, "gateway")   # {"cert": ..., "key": ..., "ca": ...}

Leaves are valid for ``localhost`` and 127.0.0.1 and may serve and be used as clients
(mTLS), like the certificates cert-manager issues in the prod overlay.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _builder(subject: str, issuer: str, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)))


@dataclass
class Authority:
    """A self-signed CA that issues leaf certificates."""

    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def new(cls, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (_builder(name, name, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(name, key, cert)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a leaf valid for localhost and 127.0.0.1."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.DNSName(common_name),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                       ExtendedKeyUsageOID.CLIENT_AUTH])
        cert = (_builder(common_name, self.name, key.public_key())
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(names, critical=False).add_extension(usage, critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    def issue_files(self, folder: Path, common_name: str) -> dict[str, str]:
        """Write ``NAME.crt``, ``NAME.key`` and ``ca.crt`` under ``folder``; their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = self.issue(common_name)
        paths = {"cert": folder / f"{common_name}.crt", "key": folder / f"{common_name}.key",
                 "ca": folder / "ca.crt"}
        paths["cert"].write_bytes(cert)
        paths["key"].write_bytes(key)
        paths["ca"].write_bytes(self.pem)
        return {kind: str(path) for kind, path in paths.items()}


def tls_env(files: dict[str, str]) -> dict[str, str]:
    """The settings that make a process use ``files`` (mTLS: certificate, key and CA)."""
    return {"MOVIEREC_TLS_CERT": files["cert"], "MOVIEREC_TLS_KEY": files["key"],
            "MOVIEREC_TLS_CA": files["ca"]}
