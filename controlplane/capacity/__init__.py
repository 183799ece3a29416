"""Capacity requests: validation, tenants and quotas, and their lifecycle in the store."""

from controlplane.capacity.manager import CapacityManager, demand_of
from controlplane.capacity.tenants import Tenant, TenantDirectory, TenantFileError, token_digest
from controlplane.capacity.validation import check_spec, workload_of

__all__ = [
    "CapacityManager",
    "Tenant",
    "TenantDirectory",
    "TenantFileError",
    "check_spec",
    "demand_of",
    "token_digest",
    "workload_of",
]
