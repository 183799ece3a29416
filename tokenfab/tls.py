"""TLS and mutual TLS material for gRPC and the gateway, loaded from PEM files and reloaded on renewal.

Server side: a certificate and key, plus (for mTLS) a CA bundle that client certificates must
chain to; with ``require_client_auth`` an agent with no or a wrong certificate fails the
handshake and never reaches a handler. Client side: the CA that signed the server, plus an
optional client certificate and key for mTLS. Paths that do not exist or do not hold PEM data
raise :class:`TLSConfigError` naming the setting, before any socket is opened.

Renewal (cert-manager or the chart's certgen rewrites the Secret's files): servers do not keep the
certificate they started with. :class:`CertificateFiles` checks the files on every new handshake
(``os.stat`` of each: inode, size, change and modification times; the contents are re-read and
hashed when those move, and at least every :data:`REHASH_S` seconds), and a changed, complete,
matching set becomes the one served to new connections. A half-written, unparsable or mismatched
set keeps serving the previous one and logs ``tls.reload_failed``: a server never serves nothing.
gRPC servers get this through ``grpc.dynamic_ssl_server_credentials`` (the core asks a fetcher on
each new connection); the gateway's ``ssl.SSLContext`` through its SNI callback, which every
handshake runs. Metrics: ``tokenfab_tls_certificate_expiry_timestamp_seconds{component}`` (the
served certificate's notAfter, to alert on) and ``tokenfab_tls_reloads_total{component,result}``.
Clients re-read their files each time they build credentials (:meth:`ClientTLS.credentials`), so
one that opens a new channel when it reconnects presents the renewed certificate; a long-lived
channel is a :class:`RenewingChannel`, rebuilt when its files change.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from structlog import get_logger

from tokenfab.errors import PermanentError

log = get_logger("tls")

REHASH_S = 30.0  # re-read unchanged-looking files this often (filesystems with coarse timestamps)


class TLSConfigError(PermanentError, ValueError):
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


class TLSMetrics:
    """The TLS metrics of one Prometheus registry (one instance per registry: :meth:`of`)."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, TLSMetrics] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.expiry = Gauge(
            "tokenfab_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate a server presents to new connections (Unix time)",
            ["component"],
            registry=registry,
        )
        self.reloads = Counter(
            "tokenfab_tls_reloads_total",
            "Certificate files that changed on disk: loaded (ok) or refused, the old ones kept (error)",
            ["component", "result"],
            registry=registry,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry | None = None) -> TLSMetrics:
        registry = REGISTRY if registry is None else registry
        with cls._lock:
            found = cls._by_registry.get(registry)
            if found is None:
                found = cls._by_registry[registry] = cls(registry)
            return found


@dataclass(frozen=True, slots=True)
class Material:
    """One validated certificate set: PEM bytes, and what operators want to know about it."""

    chain: bytes
    key: bytes
    ca: bytes | None
    serial: int
    not_after: float  # Unix time
    digest: str  # SHA-256 of the three files' contents

    def grpc_config(self) -> Any:  # grpc.ServerCertificateConfiguration (grpc ships no type for it)
        return grpc.ssl_server_certificate_configuration([(self.key, self.chain)], root_certificates=self.ca)


def _spki(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def load_material(cert_file: Path, key_file: Path, ca_file: Path | None = None) -> Material:
    """Read and check one set: PEM certificates, a private key that belongs to the first of them,
    and (when given) a CA bundle; :class:`TLSConfigError` names the setting that is wrong."""
    chain, key, ca = _read_pem("tls_cert", cert_file), _read_pem("tls_key", key_file), None
    assert chain is not None
    assert key is not None
    try:
        leaf = x509.load_pem_x509_certificates(chain)[0]
    except ValueError as exc:
        raise TLSConfigError(f"tls_cert: {cert_file} does not hold a certificate: {exc}") from exc
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise TLSConfigError(f"tls_key: {key_file} does not hold an unencrypted private key: {exc}") from exc
    if _spki(private.public_key()) != _spki(leaf.public_key()):
        raise TLSConfigError(f"tls_key: {key_file} is not the key of the certificate in {cert_file}")
    if ca_file is not None:
        ca = _read_pem("tls_client_ca", ca_file)
        assert ca is not None
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError as exc:
            raise TLSConfigError(f"tls_client_ca: {ca_file} does not hold certificates: {exc}") from exc
    digest = hashlib.sha256(b"\0".join((chain, key, ca or b""))).hexdigest()
    return Material(chain, key, ca, leaf.serial_number, leaf.not_valid_after_utc.timestamp(), digest)


def _signature(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int, int] | None, ...]:
    """What ``stat`` says about each file (a Kubernetes Secret's atomic symlink swap moves the inode)."""
    out: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


class CertificateFiles:
    """A server's certificate files, re-checked on each handshake; :attr:`current` is what new
    connections get. The first load raises :class:`TLSConfigError`; later failures keep the old set."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        ca_file: Path | None = None,
        *,
        component: str = "server",
        metrics: TLSMetrics | None = None,
        rehash_s: float = REHASH_S,
    ) -> None:
        self.paths = (cert_file, key_file) if ca_file is None else (cert_file, key_file, ca_file)
        self.component = component
        self._metrics = metrics or TLSMetrics.of()
        self._rehash_s = rehash_s
        self._lock = threading.Lock()
        self._seen = _signature(self.paths)
        self.current = load_material(cert_file, key_file, ca_file)
        self._read_at = time.monotonic()
        self._publish("tls.loaded")

    def _publish(self, event: str) -> None:
        self._metrics.expiry.labels(self.component).set(self.current.not_after)
        not_after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.current.not_after))
        log.info(event, component=self.component, serial=f"{self.current.serial:x}", not_after=not_after)

    def poll(self) -> Material | None:
        """The new set when the files changed and hold a valid one; None when nothing is to change."""
        with self._lock:
            seen, now = _signature(self.paths), time.monotonic()
            if seen == self._seen and now - self._read_at < self._rehash_s:
                return None
            self._seen, self._read_at = seen, now
            try:
                material = load_material(*self.paths)
            except TLSConfigError as exc:
                self._metrics.reloads.labels(self.component, "error").inc()
                log.error("tls.reload_failed", component=self.component, error=str(exc),
                          serving=f"{self.current.serial:x}")  # fmt: skip
                return None
            if material.digest == self.current.digest:
                return None
            self.current = material
            self._metrics.reloads.labels(self.component, "ok").inc()
            self._publish("tls.reloaded")
            return material

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials that ask :meth:`poll` on every new connection."""

        def fetch() -> Any:
            material = self.poll()
            return material.grpc_config() if material is not None else None

        return grpc.dynamic_ssl_server_credentials(
            self.current.grpc_config(), fetch, require_client_authentication=len(self.paths) == 3
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A server ``ssl.SSLContext`` (no client certificates) that serves the current set.

        Its SNI callback, which OpenSSL runs on every ClientHello (with or without a server name),
        polls the files; after a reload each handshake is moved to a context holding the new set
        (the way an SNI callback picks a certificate). This context itself is never modified, so a
        load that fails half-way cannot leave it with a certificate and no matching key."""
        context = _context(self.paths[0], self.paths[1])
        active = [context]

        def on_hello(conn: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
            if self.poll() is not None:
                try:
                    active[0] = _context(self.paths[0], self.paths[1])
                except (OSError, ssl.SSLError) as exc:  # changed again since poll() read it
                    log.error("tls.reload_failed", component=self.component, error=str(exc))
            if active[0] is not context and conn.context is not active[0]:
                conn.context = active[0]

        context.sni_callback = on_hello
        return context


def _context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def server_ssl_context(
    cert_file: Path, key_file: Path, *, component: str, registry: CollectorRegistry | None = None
) -> ssl.SSLContext:
    """An HTTPS server's context whose certificate follows renewals of ``cert_file``/``key_file``."""
    return CertificateFiles(
        cert_file, key_file, component=component, metrics=TLSMetrics.of(registry)
    ).ssl_context()


@dataclass(frozen=True, slots=True)
class ServerTLS:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # set: mutual TLS, client certificates required

    def files(self, component: str = "server", registry: CollectorRegistry | None = None) -> CertificateFiles:
        return CertificateFiles(
            self.cert_file,
            self.key_file,
            self.client_ca_file,
            component=component,
            metrics=TLSMetrics.of(registry),
        )

    def credentials(
        self, component: str = "server", registry: CollectorRegistry | None = None
    ) -> grpc.ServerCredentials:
        """Credentials that reload the files when they change (see the module's note)."""
        return self.files(component, registry).grpc_credentials()


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


class RenewingChannel:
    """A long-lived client channel whose client certificate follows renewals of its files.

    gRPC keeps a channel's credentials for the channel's life and reconnects with them, so a channel
    held for months would, once its connection breaks after the old certificate expired, keep
    presenting it. :meth:`get` checks the files with ``stat`` (at most every ``check_s`` seconds)
    and, when they changed and hold a whole, matching pair, opens a new channel with fresh
    credentials; calls in flight on the old one get ``grace_s`` to finish. A broken set keeps the
    current channel and logs ``tls.client_reload_failed``."""

    def __init__(
        self,
        address: str,
        tls: ClientTLS | None = None,
        *,
        options: list[tuple[str, object]] | None = None,
        check_s: float = 5.0,
        grace_s: float = 60.0,
    ) -> None:
        self.address, self.tls = address, tls
        self._options = options
        self._check_s, self._grace_s = check_s, grace_s
        files = (tls.ca_file, tls.cert_file, tls.key_file) if tls is not None else ()
        self._paths = tuple(p for p in files if p is not None)
        self._seen = _signature(self._paths)
        self._checked = time.monotonic()
        self.channel = client_channel(address, tls, options=options)
        self._retired: set[grpc.aio.Channel] = set()
        self._closing: set[asyncio.Task[None]] = set()

    def get(self) -> grpc.aio.Channel:
        """The channel to use for the next call (call it from the event loop)."""
        now = time.monotonic()
        if self.tls is None or now - self._checked < self._check_s:
            return self.channel
        self._checked, seen = now, _signature(self._paths)
        if seen == self._seen:
            return self.channel
        self._seen = seen
        try:
            if self.tls.cert_file is not None and self.tls.key_file is not None:
                load_material(self.tls.cert_file, self.tls.key_file)  # a whole, matching pair
            fresh = client_channel(self.address, self.tls, options=self._options)
        except TLSConfigError as exc:
            log.error("tls.client_reload_failed", address=self.address, error=str(exc))
            return self.channel
        old, self.channel = self.channel, fresh
        self._retired.add(old)
        task = asyncio.get_running_loop().create_task(self._retire(old))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        log.info("tls.client_renewed", address=self.address)
        return fresh

    async def _retire(self, channel: grpc.aio.Channel) -> None:
        await channel.close(grace=self._grace_s)
        self._retired.discard(channel)

    async def close(self) -> None:
        for task in list(self._closing):
            task.cancel()
        for channel in (self.channel, *self._retired):
            await channel.close()
        self._retired.clear()
