"""The clairvoyant reference: a replica schedule planned with the future known, played back.

:class:`OraclePolicy` is a policy like the others (pure ``decide``), but its knowledge of the
future is a plan: the replicas each window of ``window_s`` needs, computed before the run by
:func:`controlplane.simulate.oracle.plan_oracle` from the trace's actual arrivals. It asks for a
window's replicas ``lead_s`` (the cold start plus one decision interval) before the window
starts, so they are Ready when it begins, and releases them at the first decision after the
window ends. Nothing else: no smoothing, no hysteresis, no margin.

The same plan, played ``delay_s`` late, is the *causal reference* (``oracle_late``): a policy that
knows exactly what each window needs the moment the window begins (it sees the demand as it
arrives, and sizes it perfectly) but, like every real policy, asks for the replicas only then,
so they are Ready a cold start later. With ``hold_s`` it also keeps the largest count of the
last ``hold_s`` seconds (a perfect peak-hold). What it reaches at the oracle's hours is what no
reactive policy can beat by sizing alone; what it needs to reach 0.99 is the price of the SLO
for a policy without foresight.
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
    delay_s: float = 0.0  # > 0: play the plan this late (the causal reference)
    hold_s: float = 0.0  # > 0: keep the largest count of the windows of the last hold_s

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"oracle window_s must be positive, got {self.window_s}")
        for name in ("lead_s", "delay_s", "hold_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"oracle {name} must not be negative, got {getattr(self, name)}")

    def initial(self) -> None:
        return None

    def needed(self, at: float) -> int:
        """The plan's replicas for the window holding ``at`` (the last window's after the end)."""
        if not self.replicas:
            return 0
        k = min(len(self.replicas) - 1, max(0, math.floor(at / self.window_s)))
        return self.replicas[k]

    def decide(self, ctx: ScalingContext, state: None, now: float) -> tuple[ScalingDecision, None]:
        seen = now - self.delay_s  # the plan's clock: the oracle would have asked this at `seen`
        first = max(0, math.floor((seen - self.hold_s) / self.window_s))
        last = max(first, math.floor((seen + self.lead_s) / self.window_s))
        want = max(self.needed(k * self.window_s) for k in range(first, last + 1))
        desired, clamped = clamp(want, ctx)
        reason = (
            f"plan: {want} replicas for the windows from {first * self.window_s:.0f}s to "
            f"{(last + 1) * self.window_s:.0f}s (asked {self.lead_s - self.delay_s:.0f}s ahead"
            + (f", held {self.hold_s:.0f}s" if self.hold_s else "")
            + ")"
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
