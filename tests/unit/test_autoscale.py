"""Autoscaling policies (pure): guard rails, anti-flap, floors and ceilings, baselines' rules."""

from __future__ import annotations

import math

import pytest

from controlplane.autoscale.baselines import AibrixApaPolicy, KpaPolicy, RayServePolicy, StaticPolicy
from controlplane.autoscale.forecast import Holt, burst_rate, is_burst
from controlplane.autoscale.policy import ScalingContext, TokenfabConfig, TokenfabPolicy, UnitCapacity
from controlplane.autoscale.signals import ReplicaSample, Signals, aggregate

UNIT = UnitCapacity(
    output_tokens_per_s=100.0, input_tokens_per_s=500.0, max_concurrency=256, cost_per_hour=4.0
)


def signals(
    out: float,
    *,
    waiting: int = 0,
    replicas: int = 2,
    missing: tuple[str, ...] = (),
    kv: float = 0.3,
    ongoing: int = 4,
    at: float = 0.0,
) -> Signals:
    return Signals(
        at=at,
        replicas=replicas,
        reporting=replicas - len(missing),
        input_tokens_per_s=out * 5,
        output_tokens_per_s=out,
        requests_per_s=out / 100,
        running=ongoing,
        waiting=waiting,
        kv_usage=kv,
        ttft_p95_s=0.5,
        tpot_p95_s=0.03,
        missing=missing,
    )


def ctx(
    sig: Signals | None, current: int = 2, *, floor: int = 1, ceiling: int = 50, zero: bool = False
) -> ScalingContext:
    return ScalingContext(
        request_id="req",
        signals=sig,
        current=current,
        ready=current,
        floor=floor,
        ceiling=ceiling,
        capacity=lambda i, o: UNIT,
        cold_start_s=60.0,
        ttft_target_s=3.0,
        tpot_target_s=0.1,
        mean_input_tokens=500.0,
        mean_output_tokens=100.0,
        scale_to_zero=zero,
    )


def run(policy, series, current=2, **kw):  # type: ignore[no-untyped-def]
    """Feed (time, out tok/s) samples; apply each decision; return the decisions."""
    state = policy.initial()
    out = []
    for t, value in series:
        decision, state = policy.decide(
            ctx(signals(value, replicas=max(current, 1), at=t), current, **kw), state, t
        )
        out.append(decision)
        current = decision.desired
    return out


def test_scales_up_to_demand_over_capacity_at_target_utilisation() -> None:
    decisions = run(TokenfabPolicy(), [(t * 5.0, 400.0) for t in range(10)])
    # 400 tok/s at 80% of 100 tok/s per replica: 5 replicas
    assert decisions[-1].desired == 5
    assert decisions[0].action == "scale_up"
    assert "replicas" in decisions[0].reason


def test_missing_metrics_never_read_as_zero_demand() -> None:
    policy = TokenfabPolicy()
    state = policy.initial()
    decision, state = policy.decide(ctx(None, current=6), state, 0.0)
    assert decision.desired == 6 and "missing metrics" in decision.reason
    # incomplete: one of six replicas silent; low demand from the others must not shrink the set
    for t in range(0, 400, 5):
        decision, state = policy.decide(
            ctx(signals(10.0, replicas=6, missing=("r6: metrics 40s old",), at=t), current=6), state, float(t)
        )
        assert decision.desired >= 6
    assert "incomplete" in decision.reason


def test_scale_down_waits_for_the_delay_and_steps_by_one() -> None:
    cfg = TokenfabConfig()
    series = [(t * 5.0, 50.0) for t in range(int(2 * cfg.down_delay_s / 5))]
    decisions = run(TokenfabPolicy(cfg), series, current=8)
    first_down = next(d for d in decisions if d.action == "scale_down")
    assert first_down.at >= cfg.down_delay_s * 0.95
    assert all(d.current - d.desired <= cfg.max_step_down for d in decisions)
    assert "still run" in first_down.reason


def test_no_flapping_on_noise_around_a_level() -> None:
    series = [(t * 5.0, 300.0 + (30.0 if t % 2 else -30.0)) for t in range(200)]
    decisions = run(TokenfabPolicy(), series, current=4)
    changes = [d for d in decisions if d.action != "hold"]
    assert len(changes) <= 2


def test_floor_and_ceiling_are_respected_with_a_reason() -> None:
    up = run(TokenfabPolicy(), [(t * 5.0, 5000.0) for t in range(5)], ceiling=10)
    assert max(d.desired for d in up) == 10 and "capped" in up[-1].reason
    down = run(TokenfabPolicy(), [(t * 5.0, 0.0) for t in range(200)], current=3, floor=3)
    assert min(d.desired for d in down) == 3


def test_scale_to_zero_only_when_opted_in_and_idle() -> None:
    idle = [(t * 5.0, 0.0) for t in range(100)]
    no = run(TokenfabPolicy(), idle, current=1, floor=1)
    assert min(d.desired for d in no) == 1
    policy = TokenfabPolicy()
    state = policy.initial()
    current = 1
    for t in range(0, 700, 5):
        sig = signals(0.0, replicas=current, ongoing=0, at=t) if t else signals(50.0, replicas=1, at=0)
        decision, state = policy.decide(ctx(sig, current, floor=1, zero=True), state, float(t))
        current = decision.desired
    assert current == 0 and "scale to zero" in decision.reason


def test_observed_slo_breach_adds_a_replica_and_holds_it() -> None:
    policy = TokenfabPolicy()
    state = policy.initial()
    sig = Signals(
        at=0.0,
        replicas=3,
        reporting=3,
        input_tokens_per_s=500,
        output_tokens_per_s=100,
        requests_per_s=1,
        running=10,
        waiting=5,
        kv_usage=0.5,
        ttft_p95_s=9.0,
        tpot_p95_s=0.03,
    )
    decision, state = policy.decide(ctx(sig, current=3), state, 0.0)
    assert decision.desired == 4 and "SLO breach" in decision.reason
    # the added replica is held: the breach counts as need for the scale-down delay
    calm = Signals(
        **{**{f: getattr(sig, f) for f in sig.__slots__}, "waiting": 0, "ttft_p95_s": 0.5, "at": 5.0}
    )
    for t in range(5, 200, 5):
        decision, state = policy.decide(ctx(calm, current=4), state, float(t))
        assert decision.desired >= 4


def test_holt_follows_a_trend_and_bursts_are_flagged() -> None:
    holt = Holt()
    for t in range(0, 300, 5):
        holt = holt.update(10.0 + t, float(t), alpha=0.3, beta=0.1, tau_s=10.0)
    assert holt.trend == pytest.approx(1.0, rel=0.2)
    assert holt.forecast(60) > holt.level
    assert is_burst(30.0, 10.0, ratio=1.5, floor=1.0)
    assert not is_burst(12.0, 10.0, ratio=1.5, floor=1.0)
    assert not is_burst(0.5, math.nan, ratio=1.5, floor=1.0)


def test_burst_rate_is_the_delay_bound() -> None:
    samples = tuple((float(t), 100.0 if 10 <= t < 20 else 0.0) for t in range(60))
    rate, window = burst_rate(samples, (10.0,), slack_s=10.0)
    # 1000 tokens of work in 10 s, served within 10 s more: 50 tokens/s
    assert rate == pytest.approx(50.0) and window == 10.0
    assert burst_rate((), (10.0,), 1.0) == (0.0, 0.0)


def test_aggregate_reports_missing_and_stale_replicas() -> None:
    samples = [
        ReplicaSample("a", 100.0, 10, 20, 1, 2, 0, 0.5),
        ReplicaSample("b", 50.0, 10, 20, 1, 2, 0, 0.5),
    ]
    sig = aggregate(100.0, ["a", "b", "c"], samples, stale_after_s=15, queued=3)
    assert sig.reporting == 1 and sig.waiting == 3 and not sig.complete
    assert any(m.startswith("b: metrics 50s old") for m in sig.missing)
    assert any(m.startswith("c: no metrics") for m in sig.missing)


def test_ray_serve_waits_its_upscale_delay() -> None:
    policy = RayServePolicy()
    state = policy.initial()
    desired = []
    for t in range(0, 40, 5):
        decision, state = policy.decide(ctx(signals(0, ongoing=20, replicas=2), current=2), state, float(t))
        desired.append(decision.desired)
    assert desired[0] == 2 and desired[-1] == 10  # 20 ongoing / target 2, after 30 s


def test_apa_tolerance_band_and_doubling_bound() -> None:
    policy = AibrixApaPolicy()
    d, _ = policy.decide(ctx(signals(0, kv=0.53), current=4), policy.initial(), 0.0)
    assert d.desired == 4  # inside +/-10 %
    d, _ = policy.decide(ctx(signals(0, kv=1.0), current=4), policy.initial(), 0.0)
    assert d.desired == 8  # 2x the usage, bounded to 2n
    d, _ = policy.decide(ctx(signals(0, kv=0.05), current=4), policy.initial(), 0.0)
    assert d.desired == 2  # at most halving


def test_kpa_panics_on_a_doubling_and_does_not_scale_down_in_panic() -> None:
    policy = KpaPolicy()
    state = policy.initial()
    d, state = policy.decide(ctx(signals(0, kv=1.0, replicas=2), current=2), state, 0.0)
    assert d.desired >= 4 and "panic" in d.reason
    d, state = policy.decide(ctx(signals(0, kv=0.01, replicas=4), current=4), state, 5.0)
    assert d.desired >= 4


def test_static_is_static() -> None:
    d, _ = StaticPolicy(7).decide(ctx(signals(0), current=2), None, 0.0)
    assert d.desired == 7
