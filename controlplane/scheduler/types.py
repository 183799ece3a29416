"""Inputs and outputs of the scheduler: immutable snapshots in, a plan with explanations out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from controlplane.catalog.perf import Workload
from controlplane.catalog.types import Dtype
from controlplane.domain.nodes import Vendor
from controlplane.scheduler.reasons import ReasonCode


@dataclass(frozen=True, slots=True)
class NodeSlot:
    """The scheduler's view of one node."""

    node_id: str
    cluster: str
    region: str
    vendor: Vendor
    accelerator: str
    devices: tuple[tuple[int, int], ...]  # healthy devices as (index, numa node)
    schedulable: bool = True
    unschedulable_reason: str = ""  # e.g. "cordoned", "suspect"
    lease_end: datetime | None = None  # None: owned
    price_per_accelerator_hour: float | None = None  # None: the catalog's default for the type
    state: str = "ready"  # the fleet's node state: ready, suspect, lost, cordoned, draining, ...
    quarantined_until: datetime | None = None  # flapping: no new replicas, existing ones move off


@dataclass(frozen=True, slots=True)
class PlacedReplica:
    """A replica that already exists (running or being started)."""

    replica_id: str
    request_id: str
    node_id: str
    accelerator: str
    tp: int
    devices: tuple[int, ...]
    output_tokens_per_s: float


@dataclass(frozen=True, slots=True)
class Demand:
    """What one capacity request needs. Empty allow-sets mean "any"."""

    request_id: str
    model: str
    target_output_tokens_per_s: float
    target_input_tokens_per_s: float = 0.0
    workload: Workload = field(default_factory=Workload)
    dtype: Dtype = Dtype.BF16
    allowed_vendors: frozenset[Vendor] = frozenset()
    denied_vendors: frozenset[Vendor] = frozenset()
    allowed_accelerators: frozenset[str] = frozenset()
    denied_accelerators: frozenset[str] = frozenset()
    clusters: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    max_price_per_million_output: float | None = None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Option:
    """One way to serve a model: accelerator type and TP size, with its predicted economics."""

    accelerator: str
    vendor: Vendor
    tp: int
    feasible: bool
    output_tokens_per_s: float
    input_tokens_per_s: float
    cost_per_hour: float
    cost_per_million_output: float
    reason: str  # why it is infeasible or excluded; "" when usable
    sizing: str = ""  # why this TP degree: the mix's tail and the smaller degrees that failed


@dataclass(frozen=True, slots=True)
class Placement:
    """A new replica the plan asks for."""

    request_id: str
    accelerator: str
    tp: int
    node_id: str
    devices: tuple[int, ...]
    output_tokens_per_s: float
    cost_per_hour: float
    reason: str
    input_tokens_per_s: float = 0.0  # prompt tokens/s it serves at the request's mix (calibrated)


@dataclass(frozen=True, slots=True)
class RequestPlan:
    request_id: str
    status: str  # satisfied | partial | unsatisfiable
    reason: str
    code: ReasonCode | None  # why not satisfied; None when satisfied
    placements: tuple[Placement, ...]
    existing_output_tokens_per_s: float
    planned_output_tokens_per_s: float
    options: tuple[Option, ...]
    rejected_nodes: dict[str, int]  # reason -> count (nodes of usable types that could not take a replica)
    rejected_examples: dict[str, tuple[str, ...]]  # reason -> a few node ids


@dataclass(frozen=True, slots=True)
class Plan:
    requests: tuple[RequestPlan, ...]

    @property
    def placements(self) -> list[Placement]:
        return [p for r in self.requests for p in r.placements]

    def for_request(self, request_id: str) -> RequestPlan:
        for plan in self.requests:
            if plan.request_id == request_id:
                return plan
        raise KeyError(request_id)
