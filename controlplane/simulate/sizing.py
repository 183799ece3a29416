"""Sizing from a trace, purely computational: the replicas each window's arrivals need at full
predicted capacity, the warm start every policy shares, and static peak's count (an oracle of
the trace's busiest minute)."""

from __future__ import annotations

import math

from controlplane.autoscale.policy import UnitCapacity
from controlplane.simulate.trace import Trace


def needs(trace: Trace, unit: UnitCapacity, window_s: float) -> list[float]:
    """Replicas at full predicted capacity needed by each ``window_s`` window, in order."""
    buckets: dict[int, list[int]] = {}
    for r in trace.requests:
        b = buckets.setdefault(int(r.arrival_s // window_s), [0, 0])
        b[0] += r.input_tokens
        b[1] += r.output_tokens
    needs: list[float] = []
    for _, (tokens_in, tokens_out) in sorted(buckets.items()):
        needs.append(
            max(
                tokens_out / window_s / unit.output_tokens_per_s,
                tokens_in / window_s / unit.input_tokens_per_s if unit.input_tokens_per_s else 0.0,
            )
        )
    return needs


def warm_replicas(
    trace: Trace, unit: UnitCapacity, *, window_s: float = 60.0, utilisation: float = 0.8
) -> int:
    first = needs(trace, unit, window_s)
    return max(1, math.ceil(first[0] / utilisation)) if first else 1


def peak_replicas(
    trace: Trace, unit: UnitCapacity, *, window_s: float = 60.0, utilisation: float = 0.8
) -> int:
    """Static provisioning for the trace's busiest window: the replicas whose capacity at the SLO,
    at ``utilisation``, covers its output and input tokens/s."""
    if not trace.requests:
        return 1
    worst = 0.0
    for need in needs(trace, unit, window_s):
        worst = max(worst, need)
    return max(1, math.ceil(worst / utilisation))
