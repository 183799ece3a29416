"""A tenant as the capacity and autoscaling decisions see it: its name and its limits.

Pure data. Where tenants come from (the operator's YAML file of bearer-token digests) is
:mod:`controlplane.security.tokens`; :mod:`controlplane.capacity.tenants` re-exports this class under
the name the capacity code has always imported.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Tenant"]


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    max_accelerators: int | None = None
    max_spend_per_hour: float | None = None
    max_priority: int | None = None  # the highest spec.priority this tenant may ask for
