"""Baseline autoscalers, at their published defaults, behind the same pure interface.

* **Ray Serve** (docs: "Advanced Ray Serve Autoscaling", ``AutoscalingConfig``): desired =
  ceil(ongoing requests averaged over ``look_back_period_s`` / ``target_ongoing_requests``);
  a scale-up applies after the decision held for ``upscale_delay_s``, a scale-down after
  ``downscale_delay_s``. Defaults: target 2, look-back 30 s, up 30 s, down 600 s.
* **AIBrix APA**: per-replica metric averaged over a window versus its target; no action inside
  the +/-10 % tolerance band; a step is bounded to [n/2, 2n]; scale-down waits a 300 s cooldown
  after the last scaling. Metric: KV-cache usage (``gpu_cache_usage_perc``), target 0.5, as in
  AIBrix's published PodAutoscaler examples.
* **KPA** (Knative's algorithm as AIBrix ships it): desired = ceil(metric total over the stable
  window (180 s) / target); if the panic window (60 s) asks for >= 2x the ready replicas it
  enters panic mode: scale up on the panic window and never down until a stable window passes
  without panic. Same metric and target as APA. Scale-down rate at most halving per step.
* **Static peak**: a fixed count, sized by the caller for the trace's peak (an oracle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controlplane.autoscale.policy import ScalingContext, ScalingDecision, clamp
from controlplane.autoscale.signals import trim, window_mean


def _decision(
    policy: str, ctx: ScalingContext, now: float, desired: int, reason: str, **inputs: float
) -> ScalingDecision:
    final, clamped = clamp(desired, ctx)
    return ScalingDecision(
        ctx.request_id,
        now,
        policy,
        ctx.current,
        final,
        f"{reason}; {clamped}" if clamped else reason,
        inputs=dict(inputs),
    )


@dataclass(frozen=True, slots=True)
class RayServeState:
    history: tuple[tuple[float, float], ...] = ()
    pending_since: float = math.nan  # when the current scaling direction was first decided
    direction: int = 0


@dataclass(frozen=True, slots=True)
class RayServePolicy:
    target_ongoing_requests: float = 2.0
    look_back_period_s: float = 30.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    name: str = "ray_serve"

    def initial(self) -> RayServeState:
        return RayServeState()

    def decide(
        self, ctx: ScalingContext, state: RayServeState, now: float
    ) -> tuple[ScalingDecision, RayServeState]:
        if ctx.signals is None or not ctx.signals.complete:
            return _decision(self.name, ctx, now, ctx.current, "metrics missing: hold"), state
        history = trim((*state.history, (now, float(ctx.signals.ongoing))), now, self.look_back_period_s)
        ongoing = window_mean(history, now, self.look_back_period_s)
        raw = math.ceil(ongoing / self.target_ongoing_requests - 1e-9)
        direction = (raw > ctx.current) - (raw < ctx.current)
        since = state.pending_since if direction == state.direction and direction != 0 else now
        delay = self.upscale_delay_s if direction > 0 else self.downscale_delay_s
        desired = raw if direction != 0 and now - since >= delay else ctx.current
        reason = (
            f"{ongoing:.1f} ongoing requests over {self.look_back_period_s:.0f}s / target "
            f"{self.target_ongoing_requests:g} = {raw}"
            + (
                ""
                if desired == raw
                else f"; waiting {delay - (now - since):.0f}s more of the {delay:.0f}s delay"
            )
        )
        return (
            _decision(self.name, ctx, now, desired, reason, ongoing=ongoing),
            RayServeState(history, since, direction),
        )


@dataclass(frozen=True, slots=True)
class ApaState:
    history: tuple[tuple[float, float], ...] = ()
    last_scale_at: float = -math.inf


@dataclass(frozen=True, slots=True)
class AibrixApaPolicy:
    target_kv_usage: float = 0.5
    tolerance: float = 0.1
    window_s: float = 30.0
    scale_down_cooldown_s: float = 300.0
    name: str = "aibrix_apa"

    def initial(self) -> ApaState:
        return ApaState()

    def decide(self, ctx: ScalingContext, state: ApaState, now: float) -> tuple[ScalingDecision, ApaState]:
        sig = ctx.signals
        if sig is None or not sig.complete:
            return _decision(self.name, ctx, now, ctx.current, "metrics missing: hold"), state
        # Queued requests in front of zero replicas count as a full replica's worth of usage.
        value = sig.kv_usage if sig.reporting else (1.0 if sig.ongoing else 0.0)
        history = trim((*state.history, (now, value)), now, self.window_s)
        usage = window_mean(history, now, self.window_s)
        n = max(ctx.current, 1)
        ratio = usage / self.target_kv_usage
        desired, reason = (
            ctx.current,
            f"KV usage {usage:.2f} vs target {self.target_kv_usage:g}: within tolerance",
        )
        if ratio > 1 + self.tolerance or (ctx.current == 0 and sig.ongoing):
            desired = min(math.ceil(n * ratio - 1e-9), 2 * n)
            reason = f"KV usage {usage:.2f} > target {self.target_kv_usage:g} x {1 + self.tolerance:g}"
        elif ratio < 1 - self.tolerance:
            if now - state.last_scale_at >= self.scale_down_cooldown_s:
                desired = max(math.ceil(n * ratio - 1e-9), math.ceil(n / 2))
                reason = f"KV usage {usage:.2f} < target {self.target_kv_usage:g} x {1 - self.tolerance:g}"
            else:
                reason = f"KV usage {usage:.2f} low, in the {self.scale_down_cooldown_s:.0f}s cooldown"
        decision = _decision(self.name, ctx, now, desired, reason, kv_usage=usage)
        changed = decision.desired != ctx.current
        return decision, ApaState(history, now if changed else state.last_scale_at)


@dataclass(frozen=True, slots=True)
class KpaState:
    history: tuple[tuple[float, float], ...] = ()  # (time, metric total over replicas)
    panic_until: float = -math.inf


@dataclass(frozen=True, slots=True)
class KpaPolicy:
    target_kv_usage: float = 0.5
    stable_window_s: float = 180.0
    panic_window_s: float = 60.0
    panic_threshold: float = 2.0
    max_scale_down_rate: float = 2.0
    name: str = "kpa"

    def initial(self) -> KpaState:
        return KpaState()

    def decide(self, ctx: ScalingContext, state: KpaState, now: float) -> tuple[ScalingDecision, KpaState]:
        sig = ctx.signals
        if sig is None or not sig.complete:
            return _decision(self.name, ctx, now, ctx.current, "metrics missing: hold"), state
        total = sig.kv_usage * sig.reporting if sig.reporting else (1.0 if sig.ongoing else 0.0)
        history = trim((*state.history, (now, total)), now, self.stable_window_s)
        stable = window_mean(history, now, self.stable_window_s)
        panic = window_mean(history, now, self.panic_window_s)
        want_stable = math.ceil(stable / self.target_kv_usage - 1e-9)
        want_panic = math.ceil(panic / self.target_kv_usage - 1e-9)
        ready = max(ctx.ready, 1)
        panic_until = state.panic_until
        if want_panic / ready >= self.panic_threshold:
            panic_until = now + self.stable_window_s
        if now < panic_until:
            desired = max(want_panic, ctx.current)
            reason = f"panic: {panic:.2f} KV usage over {self.panic_window_s:.0f}s wants {want_panic}"
        else:
            desired = max(want_stable, math.floor(ctx.current / self.max_scale_down_rate))
            reason = f"stable: {stable:.2f} KV usage over {self.stable_window_s:.0f}s wants {want_stable}"
        return (
            _decision(self.name, ctx, now, desired, reason, stable=stable, panic=panic),
            KpaState(history, panic_until),
        )


@dataclass(frozen=True, slots=True)
class StaticPolicy:
    replicas: int
    name: str = "static_peak"

    def initial(self) -> None:
        return None

    def decide(self, ctx: ScalingContext, state: None, now: float) -> tuple[ScalingDecision, None]:
        return _decision(
            self.name, ctx, now, self.replicas, f"static: {self.replicas} replicas sized for the peak"
        ), state
