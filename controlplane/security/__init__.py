"""Security: identities, one authorization policy table, the interceptor chain, the audit log and
a local PKI. See docs/design/security.md for the threat model."""

from controlplane.security.audit import AuditEntry, AuditLog
from controlplane.security.authn import Authenticator, identity_of_pem, warn_insecure_local_admin
from controlplane.security.interceptor import (
    SecurityInterceptor,
    check_node,
    current_principal,
    typed_errors,
)
from controlplane.security.pki import Issued, LocalCA
from controlplane.security.policy import POLICY, Access, Rule
from controlplane.security.principals import LOCAL, Kind, Principal, Role, spiffe_uri
from controlplane.security.tokens import (
    Operator,
    OperatorDirectory,
    Reloading,
    Tenant,
    TenantDirectory,
    TokenFileError,
    token_digest,
)

__all__ = [
    "LOCAL",
    "POLICY",
    "Access",
    "AuditEntry",
    "AuditLog",
    "Authenticator",
    "Issued",
    "Kind",
    "LocalCA",
    "Operator",
    "OperatorDirectory",
    "Principal",
    "Reloading",
    "Role",
    "Rule",
    "SecurityInterceptor",
    "Tenant",
    "TenantDirectory",
    "TokenFileError",
    "check_node",
    "current_principal",
    "identity_of_pem",
    "spiffe_uri",
    "token_digest",
    "typed_errors",
    "warn_insecure_local_admin",
]
