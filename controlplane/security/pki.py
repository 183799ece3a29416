"""A local certificate authority for ``tokenfab up`` and tests: one CA, one certificate per component.

Every certificate carries its workload identity as a URI SAN (``spiffe://tokenfab/<kind>/<name>``)
and may serve and be a client (control-plane instances call executors); server names are
``localhost`` and ``127.0.0.1`` plus any given. Keys are ECDSA P-256, written 0600; nothing here
is hand-rolled crypto (the ``cryptography`` package's x509 builder does the work).

Files in the directory::

    ca.crt  ca.key                      the authority (the key never leaves the state dir)
    <kind>-<name>.crt  <kind>-<name>.key
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.security.principals import Kind, spiffe_uri

VALID_DAYS = 365


@dataclass(frozen=True, slots=True)
class Issued:
    cert: Path
    key: Path
    ca: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


class LocalCA:
    """``LocalCA.open(dir)`` loads the CA in ``dir`` or creates one; ``issue`` makes certificates."""

    def __init__(self, directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.dir = directory
        self._cert = cert
        self._key = key

    @property
    def cert_file(self) -> Path:
        return self.dir / "ca.crt"

    @classmethod
    def open(cls, directory: Path, *, name: str = "tokenfab-local-ca") -> LocalCA:
        directory.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = directory / "ca.crt", directory / "ca.key"
        if cert_file.exists() and key_file.exists():
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_file}: expected an EC private key")
            return cls(directory, cert, key)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS * 5))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_key(key_file, key)
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory, cert, key)

    def issue(self, kind: Kind, name: str, *, hosts: tuple[str, ...] = ()) -> Issued:
        """A certificate and key for one workload identity (reused when already issued and valid)."""
        stem = f"{kind.value}-{name}".replace("/", "_")
        cert_file, key_file = self.dir / f"{stem}.crt", self.dir / f"{stem}.key"
        if cert_file.exists() and key_file.exists() and self._still_valid(cert_file):
            return Issued(cert_file, key_file, self.cert_file)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(spiffe_uri(kind, name)),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{kind.value}/{name}"[:64])]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        _write_key(key_file, key)
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return Issued(cert_file, key_file, self.cert_file)

    def _still_valid(self, cert_file: Path) -> bool:
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        except ValueError:
            return False
        remaining = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
        return cert.issuer == self._cert.subject and remaining > dt.timedelta(days=7)
