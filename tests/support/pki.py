"""A throwaway PKI for TLS tests: a CA, a server certificate for 127.0.0.1, a client
certificate, and a server certificate from the same CA for another name. Valid for an hour."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Pki", "make_pki"]


@dataclass
class Pki:
    """PEM texts; :meth:`write` puts them in files for servers that read files."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    dir: Path
    # a server certificate from the same CA for another name than 127.0.0.1
    wrong_name_cert: str = ""
    wrong_name_key: str = ""

    def write(self) -> dict[str, Path]:
        """ca, server_cert, server_key, client_cert, client_key as files in :attr:`dir`."""
        paths = {}
        for name in ("ca", "server_cert", "server_key", "client_cert", "client_key"):
            path = paths[name] = self.dir / f"{name}.pem"
            path.write_text(getattr(self, name))
        return paths


def make_pki(tmp: Path) -> Pki:
    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def pem_key(k: ec.EllipticCurvePrivateKey) -> str:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()).decode()

    now = dt.datetime.now(dt.UTC)
    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hookgate test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, san: bool) -> tuple[str, str]:
        k = key()
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(ca_name).public_key(k.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(hours=1)))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM).decode(), pem_key(k)

    server_cert, server_key = leaf("127.0.0.1", san=True)
    client_cert, client_key = leaf("hookgate-client", san=False)
    wrong_cert, wrong_key = leaf("other.example", san=False)
    return Pki(ca.public_bytes(serialization.Encoding.PEM).decode(), server_cert, server_key,
               client_cert, client_key, tmp, wrong_cert, wrong_key)
