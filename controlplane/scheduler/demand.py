"""A capacity spec in the scheduler's terms: the workload shape and the demand. Purely
computational (no I/O, no clock).

These live next to the scheduler, not in :mod:`controlplane.capacity`, because the pure core
(the reconcile decision, the autoscaler's feasibility, the simulator) needs them and importing
anything under ``controlplane.capacity`` runs that package's ``__init__``, which loads the
store-backed CapacityManager and with it the etcd and gRPC clients.
"""

from __future__ import annotations

from controlplane.catalog.perf import Workload
from controlplane.domain.capacity import CapacitySpec
from controlplane.scheduler.types import Demand


def workload_of(spec: CapacitySpec) -> Workload:
    """The request shape the performance model predicts for (latency targets in seconds)."""
    return Workload(
        input_tokens=spec.mean_input_tokens,
        output_tokens=spec.mean_output_tokens,
        ttft_p95_s=spec.latency.ttft_p95_ms / 1000,
        tpot_p95_s=spec.latency.tpot_p95_ms / 1000,
    )


def demand_of(record_id: str, spec: CapacitySpec) -> Demand:
    """What the scheduler must place for one request: its target, shape and constraints."""
    return Demand(
        request_id=record_id,
        model=spec.model,
        target_output_tokens_per_s=spec.output_tokens_per_second,
        target_input_tokens_per_s=spec.input_tokens_per_second,
        workload=workload_of(spec),
        allowed_vendors=frozenset(spec.allowed_vendors),
        denied_vendors=frozenset(spec.denied_vendors),
        allowed_accelerators=frozenset(spec.allowed_accelerators),
        denied_accelerators=frozenset(spec.denied_accelerators),
        clusters=frozenset(spec.clusters),
        regions=frozenset(spec.regions),
        max_price_per_million_output=spec.max_price_per_million_output_tokens,
        priority=spec.priority,
    )
