"""The shared context builder, the pure step, the mix estimator and the daily shape."""

from __future__ import annotations

import math

import pytest

from controlplane.autoscale.context import CapacityByMix, build_context, floor_replicas, step
from controlplane.autoscale.forecast import Seasonal
from controlplane.autoscale.policy import TokenfabConfig, TokenfabPolicy, TokenfabState, UnitCapacity
from controlplane.autoscale.signals import ReplicaSample, aggregate

UNIT = UnitCapacity(1000.0, 4000.0, 64, 2.0, "910C", 2)


def test_capacity_by_mix_buckets_and_falls_back_to_the_declared_mix() -> None:
    calls: list[tuple[float, float]] = []

    def predict(mean_in: float, mean_out: float) -> UnitCapacity | None:
        calls.append((mean_in, mean_out))
        return None if mean_in > 50_000 else UnitCapacity(100_000 / mean_in, 1.0, 1, 1.0)

    capacity = CapacityByMix(predict, 1000.0, 200.0)
    first = capacity(1000.0, 200.0)
    assert capacity(1010.0, 201.0) is first  # the same 5 % bucket: predicted once
    assert len(calls) == 1
    # a mix nothing serves is sized on the declared mix
    assert capacity(200_000.0, 10.0) == capacity.declared
    nothing = CapacityByMix(lambda i, o: None, 1000.0, 200.0)
    with pytest.raises(ValueError, match="declared mix"):
        _ = nothing.declared


def test_build_context_keeps_the_ceiling_above_the_floor_and_step_is_pure() -> None:
    ctx = build_context(
        "r", None, current=3, ready=3, capacity=lambda i, o: UNIT, floor=4, ceiling=2, cold_start_s=60.0,
        ttft_target_s=3.0, tpot_target_s=0.1, mean_input_tokens=1000.0, mean_output_tokens=200.0,
    )  # fmt: skip
    assert (ctx.floor, ctx.ceiling) == (4, 4)
    policy = TokenfabPolicy()
    state = policy.initial()
    one, two = step(policy, ctx, state, 10.0), step(policy, ctx, state, 10.0)
    assert one == two and one.decision.desired == 4  # no metrics: hold, clamped to the floor
    assert floor_replicas(3000.0, 1000.0) == 3 and floor_replicas(0.0, 1000.0) == 1


def test_mix_comes_from_the_finished_requests_own_lengths() -> None:
    # a burst: 20k prompt tokens/s prefilled for requests not finished yet, 2 short requests done
    sample = ReplicaSample("a", 10.0, 20_000.0, 100.0, 0.2, 30, 5, 0.5, math.nan, math.nan, 400.0, 40.0)
    sig = aggregate(10.0, ["a"], [sample])
    assert sig.mean_tokens(1.0, 1.0) == pytest.approx((2000.0, 200.0))
    # an engine that exports only the counters: the rate ratio (skewed in bursts) is the fallback
    legacy = aggregate(10.0, ["a"], [ReplicaSample("a", 10.0, 20_000.0, 100.0, 0.2, 30, 5, 0.5)])
    assert legacy.mean_tokens(1.0, 1.0) == pytest.approx((100_000.0, 500.0))


def test_seasonal_learns_the_daily_shape_and_looks_ahead() -> None:
    day, slot = 86_400.0, 900.0
    season = Seasonal()
    assert math.isnan(season.ahead(0.0, 3600.0))
    # day 1: a ramp to 10 replicas at 08:00, 2 before
    for t in range(0, int(day), 60):
        season = season.update(10.0 if 8 * 3600 <= t < 12 * 3600 else 2.0, float(t))
    # day 2 at 07:30: the coming hour holds the ramp seen yesterday
    assert season.ahead(day + 7.5 * 3600, 3600.0) == 10.0
    assert season.ahead(day + 13 * 3600, 1800.0) == 2.0
    # blended with the newest day at the given weight
    for t in range(int(day), int(day + 2 * 3600 + slot), 60):
        season = season.update(6.0, float(t))
    assert season.ahead(2 * day, 60.0) == pytest.approx(0.5 * 6.0 + 0.5 * 2.0)


def test_the_policy_prewarms_from_the_daily_shape_and_persists_it() -> None:
    policy = TokenfabPolicy(TokenfabConfig(season_floor=0.8))
    peaks = tuple(10.0 if k == 40 else 1.0 for k in range(96))  # 10:00-10:15 needed 10 replicas
    state = TokenfabState(season=Seasonal(peaks=peaks))
    at = 86_400.0 + 9.8 * 3600  # 09:48 the next day: the ramp is within a cold start + 15 min
    samples = [ReplicaSample(r, at, 400.0, 100.0, 0.5, 4, 0, 0.1, 0.2, 0.05, 400.0, 100.0) for r in "ab"]
    ctx = build_context(
        "r", aggregate(at, ["a", "b"], samples), current=2, ready=2, capacity=lambda i, o: UNIT, floor=1,
        ceiling=50, cold_start_s=60.0, ttft_target_s=3.0, tpot_target_s=0.1, mean_input_tokens=800.0,
        mean_output_tokens=200.0,
    )  # fmt: skip
    decision, new = policy.decide(ctx, state, at)
    assert decision.desired == 8 and decision.inputs["seasonal_need"] == pytest.approx(8.0)
    assert policy.decode(policy.encode(new)) == new
    # without the floor the same moment holds 2
    plain, _ = TokenfabPolicy().decide(ctx, state, at)
    assert plain.desired == 2
