"""The live autoscaler's arithmetic around the policy, purely computational: the cold start its
replicas showed, the applied target for a replica count, a replica's cost, the ceiling and which
limit binds it, and how a decision's reason is compared and its figures recorded.

A request scaled to zero wakes here too (:func:`wake_record`): its decision and applied target.

Kept apart from :mod:`controlplane.reconcile.autoscaler` (which reads, plans and writes) so each
module owns one thing; the scheduler's options and the policy's types are its only inputs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from controlplane.autoscale.context import floor_replicas
from controlplane.autoscale.policy import UnitCapacity
from controlplane.catalog.types import Catalog
from controlplane.domain.autoscaling import AppliedTarget, DecisionRecord, Mode
from controlplane.domain.capacity import CapacityRecord
from controlplane.domain.demand import GatewayDemand
from controlplane.domain.replicas import ReplicaRecord, ReplicaState
from controlplane.domain.tenants import Tenant
from controlplane.reconcile.status import EPS
from controlplane.scheduler.types import Option

S = ReplicaState


def learned_cold_start_s(replicas: Sequence[ReplicaRecord]) -> float | None:
    """Median creation-to-Ready time of the Ready replicas (their ``updated_at`` is the Ready move)."""
    times = [
        (r.updated_at - r.created_at).total_seconds()
        for r in replicas
        if r.state is S.READY and r.updated_at >= r.created_at
    ]
    return statistics.median(times) if times else None


def applied_target(desired: int, unit_tps: float, reserved: float, *, scale_to_zero: bool) -> float:
    """Output tokens/s that sizes the request for ``desired`` replicas of ``unit_tps`` each."""
    if desired <= 0 and scale_to_zero:
        return 0.0
    return max(reserved, desired * unit_tps)


def replica_cost_per_hour(record: ReplicaRecord, catalog: Catalog) -> float:
    accelerator = catalog.accelerators.get(record.accelerator)
    return (accelerator.price_per_hour if accelerator else 0.0) * record.tensor_parallel


@dataclass(frozen=True, slots=True)
class Ceiling:
    replicas: int
    why: str


def ceiling_replicas(
    request: CapacityRecord,
    unit: UnitCapacity,
    live: int,
    *,
    free_output_tps: float,
    tenant: Tenant | None,
    tenant_spend_elsewhere: float,
    tenant_accelerators_elsewhere: int,
) -> Ceiling:
    """The most replicas (of ``unit``) the request may have, and which limit binds."""
    # 5% tolerance on the fleet: a calibration factor a hair below 1 must not round a free slot away
    limits: list[tuple[float, str]] = [
        (live + free_output_tps / unit.output_tokens_per_s + 0.05, "free fleet capacity")
    ]
    auto = request.spec.autoscaling
    if auto.max_output_tokens_per_second is not None:
        limits.append((auto.max_output_tokens_per_second / unit.output_tokens_per_s, "max tokens/s"))
    if auto.max_spend_per_hour is not None and unit.cost_per_hour > 0:
        limits.append((auto.max_spend_per_hour / unit.cost_per_hour, "the request's budget"))
    if tenant is not None and tenant.max_spend_per_hour is not None and unit.cost_per_hour > 0:
        left = tenant.max_spend_per_hour - tenant_spend_elsewhere
        limits.append((left / unit.cost_per_hour, f"tenant {tenant.name}'s spend quota"))
    if tenant is not None and tenant.max_accelerators is not None and unit.tp > 0:
        left_devices = tenant.max_accelerators - tenant_accelerators_elsewhere
        limits.append((left_devices / unit.tp, f"tenant {tenant.name}'s accelerator quota"))
    value, why = min(limits, key=lambda item: item[0])
    return Ceiling(max(0, math.floor(value + EPS)), why)


def best_option(options: Sequence[Option]) -> Option | None:
    return next((o for o in options if o.feasible), None)


def gist(reason: str) -> str:
    """The kind of a reason, without its numbers: a hold whose figures drift is not news."""
    head = reason
    for stop in (";", ":", ",", "("):
        head = head.split(stop)[0]
    return "".join(c for c in head if not c.isdigit() and c != ".").strip()


def finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def wake_record(
    request: CapacityRecord, offered: GatewayDemand, unit: UnitCapacity, *, at: datetime, policy: str,
    mode: Mode, advisory: bool,
) -> tuple[DecisionRecord, AppliedTarget | None]:  # fmt: skip
    """Scale from zero: a request at zero with calls queued at the gateway (``offered``) gets its
    reserved floor of ``unit`` replicas back. The decision (history entry) and, unless advisory,
    the applied target to write."""
    reserved = request.spec.output_tokens_per_second
    floor = floor_replicas(reserved, unit.output_tokens_per_s)
    reason = (
        f"waking from zero: {offered.queued} call(s) queued at the gateway (oldest "
        f"{offered.oldest_wait_s:.1f}s); the reserved floor of {floor} replica(s) is placed"
    )
    record = DecisionRecord(
        request_id=request.id, at=at, policy=policy, mode=Mode.ADVISORY if advisory else mode,
        applied=not advisory, action="scale_up", current_replicas=0, desired_replicas=floor,
        reserved_output_tokens_per_second=reserved,
        target_output_tokens_per_second=0.0 if advisory else reserved, reason=reason,
        demand_output_tokens_per_second=round(offered.offered_output_tokens_per_second, 4),
        per_replica_output_tokens_per_second=round(unit.output_tokens_per_s, 4),
        cost_per_hour=round(unit.cost_per_hour * floor, 4), accelerator=unit.accelerator,
        inputs={
            "queued": float(offered.queued), "oldest_wait_s": round(offered.oldest_wait_s, 4),
            "floor_replicas": float(floor),
        },
    )  # fmt: skip
    if advisory:
        return record, None
    write = AppliedTarget(
        request_id=request.id, output_tokens_per_second=reserved, replicas=floor, decided_at=at, reason=reason
    )
    return record, write
