"""Authentication: a gRPC call's credentials -> one :class:`Principal` (or an Unauthenticated error).

Order, first match wins:

1. ``authorization: Bearer <token>`` metadata: an operator (operators file), else a tenant
   (tenants file); an unknown token is an error, never a fall-through to the certificate.
2. The peer certificate (mTLS; the handshake already checked it chains to the deployment's CA):
   its ``spiffe://tokenfab/<kind>/<name>`` URI SAN. A certificate without one is an error.
3. No credentials, a plaintext connection from a loopback peer (127.0.0.0/8, ::1) and a server
   started with ``insecure_local_admin`` (off by default: every process of every user on the host
   would be the admin): :data:`LOCAL`. A peer from anywhere else never is.
4. Otherwise: no principal; only public methods answer.

Parsing a certificate costs about 50 µs, so identities are cached by the certificate's bytes
(bounded); an agent's stream is authenticated once, not per heartbeat.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509

from controlplane.errors import Unauthenticated
from controlplane.security.principals import LOCAL, Kind, Principal, principal_from_uri
from controlplane.security.tokens import OperatorDirectory, Reloading, TenantDirectory, bearer_token
from tokenfab.logs import get_logger

CACHE_SIZE = 4096
log = get_logger("security.authn")


def warn_insecure_local_admin(component: str, address: str, *, tls: bool) -> None:
    """The start-up line an operator must see when plaintext loopback callers are the admin."""
    log.warning(
        "security.insecure_local_admin",
        component=component,
        address=address,
        effective=not tls,  # a TLS listener never has a local principal
        detail="plaintext callers from loopback without credentials act as admin: any user on this host",
    )


def identity_of_pem(pem: bytes) -> Principal:
    """The Tokenfab identity in a PEM certificate's URI SAN; Unauthenticated when it has none."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        uris = []
    found = [p for p in (principal_from_uri(u) for u in uris) if p is not None]
    if len(found) != 1:
        raise Unauthenticated(
            f"certificate: expected exactly one spiffe://tokenfab/<kind>/<name> URI SAN, found {len(found)}"
        )
    return found[0]


def is_loopback_peer(peer: str) -> bool:
    """gRPC's peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``, ``unix:...``) is local."""
    if peer.startswith("ipv4:"):
        return peer[5:].startswith("127.")
    if peer.startswith("ipv6:"):
        return peer[5:].startswith(("[::1]", "[::ffff:127."))
    return peer.startswith("unix:")


class Authenticator:
    def __init__(
        self,
        *,
        tenants: Reloading[TenantDirectory] | None = None,
        operators: Reloading[OperatorDirectory] | None = None,
        insecure_local_admin: bool = False,
    ) -> None:
        self._tenants = tenants
        self._operators = operators
        self._local = insecure_local_admin
        self._cache: OrderedDict[bytes, Principal] = OrderedDict()

    def tenants(self) -> TenantDirectory | None:
        return self._tenants.get() if self._tenants is not None else None

    def from_token(self, token: str) -> Principal:
        if self._operators is not None:
            operator = self._operators.get().find(token)
            if operator is not None:
                return Principal(Kind.OPERATOR, operator.name, operator.role)
        tenants = self.tenants()
        if tenants is not None:
            tenant = tenants.find(token)
            if tenant is not None:
                return Principal(Kind.TENANT, tenant.name)
        raise Unauthenticated("authorization: unknown token")

    def from_certificate(self, pem: bytes) -> Principal:
        found = self._cache.get(pem)
        if found is None:
            found = identity_of_pem(pem)
            self._cache[pem] = found
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return found

    def authenticate(
        self,
        metadata: Sequence[tuple[str, Any]] | None,
        auth_context: Mapping[str, Sequence[bytes]],
        peer: str = "",
    ) -> Principal | None:
        authorization = next(
            (v for k, v in (metadata or ()) if k == "authorization" and isinstance(v, str)), None
        )
        if authorization is not None:
            return self.from_token(bearer_token(authorization))
        pems = auth_context.get("x509_pem_cert")
        if pems:
            return self.from_certificate(pems[0])
        plaintext = auth_context.get("transport_security_type", [b"insecure"])[0] != b"ssl"
        if self._local and plaintext and is_loopback_peer(peer):
            return LOCAL
        return None
