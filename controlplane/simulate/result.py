"""What a simulation run leaves behind: the timeline it sampled every tick (:class:`Point`) and
the scored outcome (:class:`SimResult`: attainment of the feasible requests, accelerator-hours,
scaling actions, the time the fleet capped the policy) with its JSON summary.

Kept apart from :mod:`controlplane.simulate.sim` (which runs the simulation) so the comparison,
the plots and the benchmark read results without the simulator's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane.autoscale.policy import ScalingDecision


@dataclass(frozen=True, slots=True)
class Point:
    t: float
    demand_output_tokens_per_s: float  # arrivals' output tokens over the last tick
    demand_input_tokens_per_s: float
    capacity_output_tokens_per_s: float  # Ready replicas at the SLO, declared mix
    ready: int
    replicas: int  # asked for and not yet stopped (includes cold starts and draining)
    demand_replicas: float = (
        0.0  # replicas at full predicted capacity the arrivals need (binding of prefill/decode)
    )
    arrived: int = 0  # feasible requests that arrived during the tick


@dataclass
class SimResult:
    policy: str
    trace: str
    requests: int
    met: int
    ttft_met: int
    tpot_met: int
    unfinished: int
    rejected: int
    accelerator_hours: float
    cost: float
    scaling_actions: int
    simulated_s: float
    wall_s: float
    max_replicas: int
    timeline: list[Point] = field(default_factory=list)
    decisions: list[ScalingDecision] = field(default_factory=list)
    missed_at: list[float] = field(default_factory=list)  # arrival times of requests that missed the SLO
    infeasible: int = 0  # no allowed shape serves them within the SLO: not scored
    infeasible_reasons: dict[str, int] = field(default_factory=dict)  # kind -> count
    fleet_capped_s: float = 0.0  # time the policy wanted more replicas than the fleet placed

    @property
    def feasible(self) -> int:
        return self.requests - self.infeasible

    @property
    def slo_attainment(self) -> float:
        """Share of the *feasible* requests that met the SLO."""
        return self.met / self.feasible if self.feasible else 1.0

    def summary(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "trace": self.trace,
            "requests": self.requests,
            "slo_attainment": round(self.slo_attainment, 5),
            "ttft_attainment": round(self.ttft_met / self.feasible, 5) if self.feasible else 1.0,
            "tpot_attainment": round(self.tpot_met / self.feasible, 5) if self.feasible else 1.0,
            "infeasible": self.infeasible,
            "infeasible_reasons": dict(self.infeasible_reasons),
            "unfinished": self.unfinished,
            "rejected": self.rejected,
            "fleet_capped_s": round(self.fleet_capped_s, 1),
            "accelerator_hours": round(self.accelerator_hours, 4),
            "cost": round(self.cost, 4),
            "scaling_actions": self.scaling_actions,
            "max_replicas": self.max_replicas,
            "simulated_s": round(self.simulated_s, 1),
            "wall_s": round(self.wall_s, 3),
            "simulated_s_per_wall_s": round(self.simulated_s / self.wall_s, 1) if self.wall_s > 0 else None,
        }
