"""What a policy is given, built one way for the live loop and the simulator, and the pure step.

* :class:`CapacityByMix` is the per-replica capacity at a prompt/output mix: the caller's
  prediction (the scheduler's best option, calibrated, in the request's own replicas for the
  live loop; the fleet's best option for the simulator), cached in 5 % buckets of each mean on a
  log scale (the mix moves slowly, the prediction is not free), and sized on the declared mix
  when the observed one is a mix no shape serves within the SLO (a run of very long prompts)
  rather than stopping.
* :func:`build_context` assembles the :class:`~controlplane.autoscale.policy.ScalingContext`
  (replica counts, floor, ceiling, cold start, SLO, declared mix) from those parts.
* :func:`step` is the pure step both drive: ``(policy, context, state, now) -> Step``, the
  decision and the state to keep; the live reconciler persists and applies it, the simulator
  applies it to its fleet.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controlplane.autoscale.policy import Policy, ScalingContext, ScalingDecision, UnitCapacity
from controlplane.autoscale.signals import Signals

_BUCKET = 0.05


def mix_bucket(mean_in: float, mean_out: float) -> tuple[int, int]:
    """The 5 % log-scale bucket of a mix."""
    return round(math.log(max(mean_in, 1.0)) / _BUCKET), round(math.log(max(mean_out, 1.0)) / _BUCKET)


def bucket_mix(key: tuple[int, int]) -> tuple[float, float]:
    """The mix a bucket stands for."""
    return math.exp(key[0] * _BUCKET), math.exp(key[1] * _BUCKET)


@dataclass
class CapacityByMix:
    """``capacity(mean_in, mean_out)`` for the policy; ``predict`` returns ``None`` for a mix
    no allowed shape serves within the SLO."""

    predict: Callable[[float, float], UnitCapacity | None]
    declared_input_tokens: float
    declared_output_tokens: float
    _cache: dict[tuple[int, int], UnitCapacity] = field(default_factory=dict)

    @property
    def declared(self) -> UnitCapacity:
        """Capacity at the declared mix; ValueError when nothing serves even that."""
        key = mix_bucket(self.declared_input_tokens, self.declared_output_tokens)
        if key not in self._cache:
            found = self.predict(*bucket_mix(key))
            if found is None:
                raise ValueError("no allowed accelerator serves the declared mix within the SLO")
            self._cache[key] = found
        return self._cache[key]

    def __call__(self, mean_in: float, mean_out: float) -> UnitCapacity:
        key = mix_bucket(mean_in, mean_out)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self.predict(*bucket_mix(key)) or self.declared
        return cached


def floor_replicas(reserved_output_tps: float, unit_output_tps: float) -> int:
    """Replicas that cover the reserved target, at least one."""
    if unit_output_tps <= 0:
        return 1
    return max(1, math.ceil(reserved_output_tps / unit_output_tps - 1e-9))


def build_context(
    request_id: str,
    signals: Signals | None,
    *,
    current: int,
    ready: int,
    capacity: Callable[[float, float], UnitCapacity],
    floor: int,
    ceiling: int,
    cold_start_s: float,
    ttft_target_s: float,
    tpot_target_s: float,
    mean_input_tokens: float,
    mean_output_tokens: float,
    scale_to_zero: bool = False,
) -> ScalingContext:
    """The context both drivers give a policy; the ceiling never falls below the floor."""
    return ScalingContext(
        request_id=request_id,
        signals=signals,
        current=current,
        ready=ready,
        floor=floor,
        ceiling=max(ceiling, floor),
        capacity=capacity,
        cold_start_s=cold_start_s,
        ttft_target_s=ttft_target_s,
        tpot_target_s=tpot_target_s,
        mean_input_tokens=mean_input_tokens,
        mean_output_tokens=mean_output_tokens,
        scale_to_zero=scale_to_zero,
    )


@dataclass(frozen=True, slots=True)
class Step:
    decision: ScalingDecision
    state: Any


def step(policy: Policy, ctx: ScalingContext, state: Any, now: float) -> Step:
    """One pure autoscaling step: the decision and the new state (nothing applied)."""
    decision, new_state = policy.decide(ctx, state, now)
    return Step(decision, new_state)
