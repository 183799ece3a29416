"""What the reconcile loop learns from a pass, besides the decision: a flapping node's
quarantine end, the replicas' start times per model and accelerator, and the throughput
samples of the online calibration. Purely computational.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from controlplane.domain.replicas import ReplicaRecord, ReplicaState
from controlplane.reconcile.world import ReconcileConfig, World

S = ReplicaState


def quarantined_until(comebacks: Sequence[datetime], now: datetime, cfg: ReconcileConfig) -> datetime | None:
    """When a flapping node's quarantine ends (None: not flapping). ``comebacks``: when the node
    came back from Lost, oldest first."""
    recent = [t for t in comebacks if (now - t).total_seconds() <= cfg.quarantine_window_s]
    if len(recent) < cfg.quarantine_after:
        return None
    return recent[-1] + timedelta(seconds=cfg.quarantine_s)


def learned_start_times(replicas: Sequence[ReplicaRecord]) -> dict[tuple[str, str], float]:
    """Median creation-to-Ready seconds of the Ready replicas, per (model, accelerator)."""
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in replicas:
        if r.state is S.READY and r.updated_at >= r.created_at:
            times[(r.model, r.accelerator)].append((r.updated_at - r.created_at).total_seconds())
    return {key: sorted(v)[len(v) // 2] for key, v in times.items()}


@dataclass(frozen=True, slots=True)
class CalibrationSample:
    model: str
    accelerator: str
    predicted_tps: float  # the performance model's, before any calibration factor
    observed_tps: float
    saturated: bool


def calibration_samples(world: World) -> list[CalibrationSample]:
    """Throughput samples of Ready replicas for the online calibration.

    A sample counts (``saturated``) only when the replica runs at the operating point the
    prediction is for: requests are queueing or the KV cache is at least 80% full (it cannot take
    more), and its TPOT p95 is within the request's target (it is not simply overloaded past the
    SLO, where throughput is higher than the SLO allows). An idle replica's throughput measures
    its demand, not its capacity, and so does a lightly loaded one that happens to have a request
    or two arriving at the moment of the scrape: a queue counts from a quarter of the batch up.
    """
    targets = {r.id: r.spec.latency.tpot_p95_ms / 1000 for r in world.requests}
    samples = []
    for record in world.replicas:
        seen = world.seen.get(record.cluster, {}).get(record.id)
        if record.state is not S.READY or seen is None or seen.state != "ready":
            continue
        target = targets.get(record.request_id)
        busy = seen.waiting >= max(2, seen.running / 4) or seen.kv_cache_usage >= 0.8
        within = target is not None and 0 < seen.tpot_p95_s <= target
        samples.append(
            CalibrationSample(
                record.model, record.accelerator,
                record.predicted_output_tokens_per_second / (record.calibration_factor or 1.0),
                seen.output_tokens_per_second, busy and within,
            )
        )  # fmt: skip
    return samples
