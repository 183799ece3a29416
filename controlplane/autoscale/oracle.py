"""The clairvoyant reference: a replica schedule planned with the future known, played back.

:class:`OraclePolicy` is a policy like the others (pure ``decide``), but its knowledge of the
future is a plan: the replicas each window of ``window_s`` needs, computed before the run by
:func:`controlplane.simulate.oracle.plan_oracle` from the trace's actual arrivals. It asks for a
window's replicas ``lead_s`` (the cold start plus one decision interval) before the window
starts, so they are Ready when it begins, and releases them at the first decision after the
window ends. Nothing else: no smoothing, no hysteresis, no margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controlplane.autoscale.policy import ScalingContext, ScalingDecision, clamp


@dataclass(frozen=True, slots=True)
class OraclePolicy:
    window_s: float
    replicas: tuple[int, ...]  # per window, from t = 0
    lead_s: float  # cold start + decision interval: ask this long before a window begins
    name: str = "oracle"

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"oracle window_s must be positive, got {self.window_s}")
        if self.lead_s < 0:
            raise ValueError(f"oracle lead_s must not be negative, got {self.lead_s}")

    def initial(self) -> None:
        return None

    def needed(self, at: float) -> int:
        """The plan's replicas for the window holding ``at`` (the last window's after the end)."""
        if not self.replicas:
            return 0
        k = min(len(self.replicas) - 1, max(0, math.floor(at / self.window_s)))
        return self.replicas[k]

    def decide(self, ctx: ScalingContext, state: None, now: float) -> tuple[ScalingDecision, None]:
        first = max(0, math.floor(now / self.window_s))
        last = max(first, math.floor((now + self.lead_s) / self.window_s))
        want = max(self.needed(k * self.window_s) for k in range(first, last + 1))
        desired, clamped = clamp(want, ctx)
        reason = (
            f"plan: {want} replicas for the windows from {first * self.window_s:.0f}s to "
            f"{(last + 1) * self.window_s:.0f}s (asked {self.lead_s:.0f}s ahead)"
        )
        return (
            ScalingDecision(
                ctx.request_id,
                now,
                self.name,
                ctx.current,
                desired,
                f"{reason}; {clamped}" if clamped else reason,
                inputs={"planned": float(want)},
            ),
            state,
        )
