"""TLS and mutual TLS material for gRPC, loaded from PEM files.

Server side: a certificate and key, plus (for mTLS) a CA bundle that client certificates must
chain to; with ``require_client_auth`` an agent with no or a wrong certificate fails the
handshake and never reaches a handler. Client side: the CA that signed the server, plus an
optional client certificate and key for mTLS. Paths that do not exist or do not hold PEM data
raise :class:`TLSConfigError` naming the setting, before any socket is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


class TLSConfigError(ValueError):
    """A TLS setting points at a missing or unreadable file, or the settings are inconsistent."""


def _read_pem(setting: str, path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from exc
    if b"-----BEGIN" not in data:
        raise TLSConfigError(f"{setting}: {path} is not a PEM file")
    return data


@dataclass(frozen=True, slots=True)
class ServerTLS:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # set: mutual TLS, client certificates required

    def credentials(self) -> grpc.ServerCredentials:
        cert = _read_pem("tls_cert", self.cert_file)
        key = _read_pem("tls_key", self.key_file)
        ca = _read_pem("tls_client_ca", self.client_ca_file)
        assert cert is not None
        assert key is not None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )


@dataclass(frozen=True, slots=True)
class ClientTLS:
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None  # overrides the name checked against the server certificate

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert_file is None) != (self.key_file is None):
            raise TLSConfigError("tls_cert/tls_key: give both a client certificate and its key, or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem("tls_ca", self.ca_file),
            private_key=_read_pem("tls_key", self.key_file),
            certificate_chain=_read_pem("tls_cert", self.cert_file),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        if self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


def client_channel(
    address: str, tls: ClientTLS | None = None, *, options: list[tuple[str, object]] | None = None
) -> grpc.aio.Channel:
    """An asyncio channel to ``address``: TLS when ``tls`` is given, plaintext otherwise."""
    opts: list[tuple[str, object]] = list(options or [])
    if tls is None:
        return grpc.aio.insecure_channel(address, options=opts)
    opts += tls.channel_options()
    return grpc.aio.secure_channel(address, tls.credentials(), options=opts)
