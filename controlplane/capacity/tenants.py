"""Tenants: bearer tokens, quotas and priority ceilings, from a YAML file the operator owns.

The file format and its parser live with the other credentials in :mod:`controlplane.security.tokens`
(the interceptor authenticates tenants before any capacity code runs); the tenant model itself is pure
data in :mod:`controlplane.domain.tenants` (what the reconcile decisions import). This module keeps
the names the capacity code has always used.
"""

from __future__ import annotations

from controlplane.domain.tenants import Tenant
from controlplane.security.tokens import TenantDirectory, TenantFileError, token_digest

__all__ = ["Tenant", "TenantDirectory", "TenantFileError", "token_digest"]
