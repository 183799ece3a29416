"""Capacity requests: what a service asked for (spec) and what Tokenfab concluded (status).

Stored as :class:`CapacityRecord` pydantic JSON under ``/tokenfab/v1/capacity/requests/<id>``.
Validation here is shape only (ranges, known vendors); catalog-dependent checks (known model,
achievable latency) live in :mod:`controlplane.capacity.validation`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controlplane.domain.nodes import Vendor, _FieldError

Name = Annotated[str, Field(min_length=1, max_length=128)]


class Phase(StrEnum):
    PENDING = "Pending"
    PLACING = "Placing"
    READY = "Ready"
    DEGRADED = "Degraded"
    UNSATISFIABLE = "Unsatisfiable"
    CANCELLED = "Cancelled"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class LatencyClass(_Model):
    ttft_p95_ms: Annotated[float, Field(gt=0, le=600_000, allow_inf_nan=False)]
    tpot_p95_ms: Annotated[float, Field(gt=0, le=60_000, allow_inf_nan=False)]


class Autoscaling(_Model):
    """Demand-driven scaling above the reserved target (the floor).

    ``max_output_tokens_per_second`` and ``max_spend_per_hour`` cap it (unset: the tenant's quota
    and the free fleet do); ``scale_to_zero`` lets an idle request give back even its reserved
    capacity (the next request then waits out a cold start); ``advisory`` records what the
    autoscaler would do without doing it.
    """

    enabled: bool = False
    max_output_tokens_per_second: Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)] | None = None
    max_spend_per_hour: Annotated[float, Field(gt=0, le=1e7, allow_inf_nan=False)] | None = None
    scale_to_zero: bool = False
    advisory: bool = False


class CapacitySpec(_Model):
    model: Name
    input_tokens_per_second: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)] = 0.0
    output_tokens_per_second: Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)]
    latency: LatencyClass
    allowed_vendors: tuple[Vendor, ...] = ()
    denied_vendors: tuple[Vendor, ...] = ()
    allowed_accelerators: tuple[Name, ...] = ()
    denied_accelerators: tuple[Name, ...] = ()
    clusters: tuple[Name, ...] = ()
    regions: tuple[Name, ...] = ()
    max_price_per_million_output_tokens: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] | None = (
        None
    )
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 0
    mean_input_tokens: Annotated[float, Field(gt=0, le=1e7, allow_inf_nan=False)] = 1024.0
    mean_output_tokens: Annotated[float, Field(gt=0, le=1e7, allow_inf_nan=False)] = 256.0
    autoscaling: Autoscaling = Autoscaling()
    # planned moves may take this share of the target out of service before replacements serve
    max_unavailable_percent: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] = 0.0

    @model_validator(mode="after")
    def _ceiling_above_floor(self) -> CapacitySpec:
        ceiling = self.autoscaling.max_output_tokens_per_second
        if ceiling is not None and ceiling < self.output_tokens_per_second:
            raise _FieldError(
                "autoscaling.max_output_tokens_per_second",
                f"{ceiling:g} is below output_tokens_per_second ({self.output_tokens_per_second:g}), "
                "the reserved floor",
            )
        return self


class Condition(_Model):
    type: Phase
    status: bool
    reason: str
    message: str = ""
    last_transition_time: datetime


class ReplicaStatus(_Model):
    replica_id: str
    accelerator: str
    node_id: str
    devices: tuple[int, ...]
    tensor_parallel: int
    state: str
    predicted_output_tokens_per_second: float
    reason: str = ""


class Estimate(_Model):
    """The cheapest plan on the catalog: what the request costs the tenant's quota."""

    accelerators: int
    spend_per_hour: float
    replicas: int
    accelerator: str
    tensor_parallel: int


class CapacityStatus(_Model):
    phase: Phase = Phase.PENDING
    conditions: tuple[Condition, ...] = ()
    replicas: tuple[ReplicaStatus, ...] = ()
    predicted_output_tokens_per_second: float = 0.0
    ready_output_tokens_per_second: float = 0.0
    observed_generation: int = 0
    target_output_tokens_per_second: float = 0.0  # what replicas are sized for now (autoscaled)


class CapacityRecord(_Model):
    id: str
    tenant: str
    spec: CapacitySpec
    status: CapacityStatus
    generation: int = 1
    created_at: datetime
    idempotency_key: str = ""
    estimate: Estimate | None = None

    @property
    def active(self) -> bool:
        return self.status.phase is not Phase.CANCELLED
