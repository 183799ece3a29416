"""What one more replica of a request is worth, and what the free fleet could still place for it:
the scheduler, asked on the live autoscaler's behalf. Purely computational.

:func:`replica_units` gives the policy its capacity callback (a replica's tokens/s at any
prompt/output mix, in the request's own replicas when it has some: their mean predicted tokens/s,
cost and tensor parallelism) and the unit at the declared mix; :func:`free_output_tps` asks the
scheduler to place a very large demand for the request on the fleet as it is and sums what fits.

Kept apart from :mod:`controlplane.reconcile.autoscaler` (which reads, plans and writes) so the
loop's module owns the loop; :mod:`controlplane.reconcile.scaling` holds the arithmetic after the
policy has answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from controlplane.autoscale.context import CapacityByMix
from controlplane.autoscale.policy import DEFAULT_MAX_CONCURRENCY, UnitCapacity
from controlplane.catalog.perf import Workload
from controlplane.catalog.types import Catalog
from controlplane.domain.capacity import CapacityRecord
from controlplane.domain.replicas import LIVE, ReplicaRecord, ReplicaState
from controlplane.reconcile.scaling import best_option, replica_cost_per_hour
from controlplane.scheduler import NodeSlot, PlacedReplica, SchedulerConfig, options_for, schedule
from controlplane.scheduler.demand import demand_of
from controlplane.scheduler.types import Demand, Option

PROBE_OUTPUT_TPS = 1e9  # "as much as fits": the probe demand's target


def replica_units(
    request: CapacityRecord,
    live: Sequence[ReplicaRecord],
    fleet: Sequence[NodeSlot],
    calibration: Mapping[tuple[str, str], float],
    catalog: Catalog,
    scheduler: SchedulerConfig,
) -> tuple[Callable[[float, float], UnitCapacity], UnitCapacity, dict[str, float]]:
    """The capacity callback for the policy, the unit at the declared mix, and the next replica's
    tokens/s (for the decision record). Raises ValueError when no accelerator in the fleet serves
    the request's model at its latency."""
    types: dict[str, int] = {}
    for slot in fleet:
        types[slot.accelerator] = max(types.get(slot.accelerator, 0), len(slot.devices))
    config = replace(scheduler, calibration=dict(calibration))
    spec = request.spec

    def option_at(mean_in: float, mean_out: float) -> Option | None:
        latency = spec.latency
        workload = Workload(mean_in, mean_out, latency.ttft_p95_ms / 1000, latency.tpot_p95_ms / 1000)
        demand = replace(demand_of(request.id, spec), workload=workload)
        return best_option(options_for(demand, catalog, types, config))

    declared = option_at(spec.mean_input_tokens, spec.mean_output_tokens)
    if declared is None:
        raise ValueError(f"no accelerator in the fleet serves {spec.model} at the request's latency")
    if live:
        # in the request's own replicas: their mean predicted tokens/s at the declared mix
        mean_tps = sum(r.predicted_output_tokens_per_second for r in live) / len(live)
        scale = mean_tps / declared.output_tokens_per_s
        cost = sum(replica_cost_per_hour(r, catalog) for r in live) / len(live)
        tp = round(sum(r.tensor_parallel for r in live) / len(live))
        accelerator = "+".join(sorted({r.accelerator for r in live}))
    else:
        scale, cost, tp, accelerator = 1.0, declared.cost_per_hour, declared.tp, declared.accelerator

    def unit_of(option: Option) -> UnitCapacity:
        return UnitCapacity(
            option.output_tokens_per_s * scale, option.input_tokens_per_s * scale, DEFAULT_MAX_CONCURRENCY,
            cost, accelerator, tp,
        )  # fmt: skip

    def predict(mean_in: float, mean_out: float) -> UnitCapacity | None:
        found = option_at(mean_in, mean_out)
        return None if found is None else unit_of(found)

    # the same capacity-by-mix the simulator uses (buckets, declared-mix fallback)
    capacity = CapacityByMix(predict, spec.mean_input_tokens, spec.mean_output_tokens)
    return capacity, unit_of(declared), {"next_replica_tps": declared.output_tokens_per_s}


def free_output_tps(
    request: CapacityRecord,
    replicas: Sequence[ReplicaRecord],
    fleet: Sequence[NodeSlot],
    calibration: Mapping[tuple[str, str], float],
    catalog: Catalog,
    scheduler: SchedulerConfig,
    *,
    now: datetime,
) -> float:
    """What the free fleet could still place for this request (the scheduler, asked for a lot),
    around every live or draining replica of every request."""
    placed = [
        PlacedReplica(
            r.id, r.request_id, r.node_id, r.accelerator, r.tensor_parallel, r.devices,
            r.predicted_output_tokens_per_second,
        )
        for r in replicas
        if r.state in LIVE or r.state is ReplicaState.DRAINING
    ]  # fmt: skip
    big: Demand = replace(
        demand_of(request.id + "/autoscale-probe", request.spec), target_output_tokens_per_s=PROBE_OUTPUT_TPS,
        target_input_tokens_per_s=0.0,
    )  # fmt: skip
    config = replace(scheduler, calibration=dict(calibration))
    plan = schedule(fleet, [big], placed, catalog, now=now, config=config)
    return sum(p.output_tokens_per_s for rp in plan.requests for p in rp.placements)
