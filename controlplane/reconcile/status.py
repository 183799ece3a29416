"""A capacity request's status from its replicas and the last plan: phase, one condition
following Kubernetes conventions, the replicas shown, predicted and Ready tokens/s. Pure.

The phase measures the promise (the reserved target), or less when the request is scaled to
zero: Ready when the Ready replicas' predicted tokens/s meet it; Placing while enough replicas
are planned or starting; Degraded when some capacity serves but the fleet cannot hold the rest
(or replicas keep crashing); Unsatisfiable when no option can serve it at all; Pending otherwise.
The condition's reason when capacity is short is the plan's code
(:func:`controlplane.scheduler.reasons.plan_reason`, shared with the API's dry run).
"""

from __future__ import annotations

from datetime import datetime

from controlplane.domain.capacity import CapacityRecord, CapacityStatus, Condition, Phase, ReplicaStatus
from controlplane.domain.replicas import LIVE, TERMINAL, ReplicaRecord, ReplicaState
from controlplane.scheduler.reasons import plan_reason
from controlplane.scheduler.types import RequestPlan

S = ReplicaState
EPS = 1e-6  # tokens/s: figures closer than this are equal


def request_status(
    request: CapacityRecord,
    replicas: list[ReplicaRecord],
    plan: RequestPlan | None,
    backoff_until: datetime | None,
    now: datetime,
    applied: float,
) -> CapacityStatus:
    # the phase measures the promise (the reserved target), or less when scaled to zero
    target = min(request.spec.output_tokens_per_second, applied)
    shown = sorted((r for r in replicas if r.state not in TERMINAL), key=lambda r: r.id)
    live = [r for r in shown if r.state in LIVE]
    ready_tps = sum(r.predicted_output_tokens_per_second for r in live if r.state is S.READY)
    predicted = sum(r.predicted_output_tokens_per_second for r in live)
    reason_text = plan.reason if plan is not None else ""
    rejected = plan.rejected_nodes if plan is not None else {}
    if rejected:
        reason_text += "; nodes rejected: " + ", ".join(f"{why} ({n})" for why, n in sorted(rejected.items()))
    unsatisfiable = plan is not None and plan.status == "unsatisfiable"
    code = plan_reason(plan).value
    if not request.active:
        phase, reason, message = Phase.CANCELLED, "CancelledByTenant", f"{len(shown)} replicas draining"
    elif applied <= EPS and not live:
        phase, reason, message = Phase.READY, "ScaledToZero", "idle: scaled to zero (opted in)"
    elif ready_tps >= target - EPS:
        phase, reason, message = Phase.READY, "TargetMet", f"{len(live)} replicas ready"
        if predicted < applied - EPS:
            message += f"; autoscaled target {applied:.0f} tokens/s not yet placed"
    elif unsatisfiable and not live:
        phase, reason, message = Phase.UNSATISFIABLE, code, reason_text
    elif predicted >= target - EPS:
        starting = sum(1 for r in live if r.state is not S.READY)
        phase, reason, message = (
            Phase.PLACING,
            "ReplicasStarting",
            f"{starting} of {len(live)} replicas starting",
        )
    elif backoff_until is not None:
        phase = Phase.DEGRADED if ready_tps > 0 else Phase.PENDING
        reason = "CrashLoopBackOff"
        message = f"replicas keep failing; next placement after {backoff_until.isoformat(timespec='seconds')}"
    elif ready_tps > 0:
        phase, reason, message = Phase.DEGRADED, code, reason_text or "the fleet cannot hold the rest"
    else:
        phase, reason, message = Phase.PENDING, code, reason_text or "waiting for capacity"
    previous = request.status.conditions[0] if request.status.conditions else None
    since = previous.last_transition_time if previous and previous.type is phase else now
    condition = Condition(
        type=phase, status=True, reason=reason, message=message,
        last_transition_time=since,
    )  # fmt: skip
    return CapacityStatus(
        phase=phase,
        conditions=(condition,),
        replicas=tuple(
            ReplicaStatus(
                replica_id=r.id,
                accelerator=r.accelerator,
                node_id=r.node_id,
                devices=r.devices,
                tensor_parallel=r.tensor_parallel,
                state=r.state.value,
                predicted_output_tokens_per_second=r.predicted_output_tokens_per_second,
                reason=r.reason,
            )
            for r in shown
        ),
        predicted_output_tokens_per_second=round(predicted, 1),
        ready_output_tokens_per_second=round(ready_tps, 1),
        observed_generation=request.generation,
        target_output_tokens_per_second=round(applied, 1),
    )
