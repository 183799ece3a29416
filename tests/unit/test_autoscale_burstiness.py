"""Holds sized by the measured burstiness, and the oracle's causal references (pure)."""

from __future__ import annotations

import math

import pytest

from controlplane.autoscale.forecast import minute_peaks, quantile
from controlplane.autoscale.oracle import OraclePolicy
from controlplane.autoscale.policy import (
    ScalingContext,
    ScalingDecision,
    TokenfabConfig,
    TokenfabPolicy,
    TokenfabState,
    UnitCapacity,
)
from controlplane.autoscale.signals import Signals
from controlplane.catalog import load_catalog
from controlplane.simulate.run import make_policy, oracle_plan, scenario_for
from controlplane.simulate.sim import Simulator
from controlplane.simulate.trace import SyntheticDemand, synthetic_trace

UNIT = UnitCapacity(
    output_tokens_per_s=100.0, input_tokens_per_s=500.0, max_concurrency=256, cost_per_hour=4.0
)


def ctx(out: float, current: int, at: float) -> ScalingContext:
    sig = Signals(
        at=at, replicas=current, reporting=current, input_tokens_per_s=out * 5, output_tokens_per_s=out,
        requests_per_s=out / 100, running=4, waiting=0, kv_usage=0.3, ttft_p95_s=0.5, tpot_p95_s=0.03,
    )  # fmt: skip
    return ScalingContext(
        request_id="req", signals=sig, current=current, ready=current, floor=1, ceiling=50,
        capacity=lambda i, o: UNIT, cold_start_s=60.0, ttft_target_s=3.0, tpot_target_s=0.1,
        mean_input_tokens=500.0, mean_output_tokens=100.0,
    )  # fmt: skip


def run(
    policy: TokenfabPolicy, series: list[tuple[float, float]], current: int
) -> tuple[list[ScalingDecision], TokenfabState]:
    state = policy.initial()
    decisions = []
    for t, value in series:
        decision, state = policy.decide(ctx(value, current, t), state, t)
        decisions.append(decision)
        current = decision.desired
    return decisions, state


def smooth(minutes: int, level: float = 300.0) -> list[tuple[float, float]]:
    return [(t * 5.0, level + (10.0 if t % 2 else -10.0)) for t in range(minutes * 12)]


def bursty(minutes: int) -> list[tuple[float, float]]:
    # 10 s of 1,000 tok/s at the start of every minute over a level of 200: a burst every minute
    return [(t * 5.0, 1000.0 if t % 12 < 2 else 200.0) for t in range(minutes * 12)]


def first_down_after(decisions: list[ScalingDecision], at: float) -> ScalingDecision:
    return next(d for d in decisions if d.at >= at and d.action == "scale_down")


def test_minute_peaks_keep_the_peak_per_minute_within_the_window() -> None:
    peaks: tuple[tuple[float, float], ...] = ()
    for t, ratio in [(0.0, 1.1), (30.0, 1.4), (59.0, math.nan), (60.0, 1.0), (200.0, 3.0)]:
        peaks = minute_peaks(peaks, t, ratio, 120.0)
    assert peaks == ((180.0, 3.0),)  # minutes 0 and 60 fell out of the 120 s window
    peaks = minute_peaks(((0.0, 1.4),), 30.0, 1.1, 3600.0)
    assert peaks == ((0.0, 1.4),)  # the peak of the minute stays
    assert quantile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0 and quantile([3.0, 1.0, 2.0, 4.0], 1.0) == 4.0
    assert math.isnan(quantile([], 0.5))


def test_smooth_demand_releases_after_the_short_hold() -> None:
    cfg = TokenfabConfig()
    drop_at = 15 * 60.0  # fifteen smooth minutes, then the demand falls to a third
    series = smooth(15) + [(drop_at + t * 5.0, 100.0) for t in range(120)]
    decisions, _ = run(TokenfabPolicy(cfg), series, current=5)
    before = [d for d in decisions if d.at < drop_at]
    assert before[-1].inputs["burstiness"] < cfg.burst_ratio
    assert before[-1].inputs["down_delay_s"] == pytest.approx(cfg.down_delay_s * cfg.smooth_hold)
    down = first_down_after(decisions, drop_at)
    # released after the short hold (90 s), well before the configured 300 s
    assert down.at - drop_at < cfg.down_delay_s * 0.95
    assert down.at - drop_at >= cfg.down_delay_s * cfg.smooth_hold * 0.95
    assert "smooth demand" in down.reason


def test_recurring_bursts_keep_the_configured_holds() -> None:
    cfg = TokenfabConfig()
    drop_at = 15 * 60.0
    series = bursty(15) + [(drop_at + t * 5.0, 100.0) for t in range(200)]
    decisions, _ = run(TokenfabPolicy(cfg), series, current=5)
    before = [d for d in decisions if d.at < drop_at]
    assert before[-1].inputs["burstiness"] >= cfg.burst_ratio
    assert before[-1].inputs["down_delay_s"] == cfg.down_delay_s
    # the bursts are held for the configured burst hold (the smooth one would release after
    # 0.3 x 300 s); once quiet minutes outnumber the bursty ones the holds shorten again
    down = first_down_after(decisions, drop_at)
    assert down.at - drop_at >= cfg.burst_hold_s * 0.95


def test_too_few_minutes_are_treated_as_bursty() -> None:
    cfg = TokenfabConfig()
    decisions, _ = run(TokenfabPolicy(cfg), smooth(cfg.burstiness_min_minutes - 2), current=5)
    assert decisions[-1].inputs["down_delay_s"] == cfg.down_delay_s


def test_the_measured_peaks_persist_and_old_states_decode() -> None:
    policy = TokenfabPolicy()
    _, state = run(policy, smooth(3), current=5)
    assert len(state.peaks) == 3
    data = policy.encode(state)
    assert policy.decode(data) == state
    del data["peaks"]  # a state written before the field existed
    assert policy.decode(data).peaks == ()


def oracle_ctx(current: int) -> ScalingContext:
    return ScalingContext(
        request_id="r", signals=None, current=current, ready=current, floor=1, ceiling=100,
        capacity=lambda i, o: UNIT,
    )  # fmt: skip


def test_the_late_oracle_asks_each_window_when_it_begins_and_can_hold() -> None:
    plan = (2, 2, 5, 1, 1, 1)
    late = OraclePolicy(window_s=60.0, replicas=plan, lead_s=65.0, delay_s=65.0)
    # the clairvoyant one asks for window 2's 5 replicas at 60 s; the late one only at 120 s
    assert late.decide(oracle_ctx(2), None, 115.0)[0].desired == 2
    assert late.decide(oracle_ctx(2), None, 120.0)[0].desired == 5
    assert late.decide(oracle_ctx(5), None, 245.0)[0].desired == 1
    held = OraclePolicy(window_s=60.0, replicas=plan, lead_s=65.0, delay_s=65.0, hold_s=120.0)
    assert held.decide(oracle_ctx(5), None, 245.0)[0].desired == 5  # window 2 is within the hold
    assert held.decide(oracle_ctx(5), None, 365.0)[0].desired == 1
    with pytest.raises(ValueError, match="delay_s"):
        OraclePolicy(window_s=60.0, replicas=plan, lead_s=65.0, delay_s=-1.0)


def test_the_oracle_and_its_references_share_one_plan() -> None:
    catalog = load_catalog()
    trace = synthetic_trace(SyntheticDemand(base_rate=0.5), 600.0, seed=3)
    scenario = scenario_for(
        trace, catalog, model="qwen2.5-7b-instruct", fleet="910C:autox8", ttft_s=3.0, tpot_s=0.1,
        cold_start_s=60.0,
    )  # fmt: skip
    sim = Simulator(scenario, catalog)
    plan = oracle_plan(sim, trace)
    assert oracle_plan(sim, trace) is plan
    policies = [make_policy(name, sim, trace) for name in ("oracle", "oracle_late", "oracle_late_hold")]
    assert all(isinstance(p, OraclePolicy) and p.replicas == plan.replicas for p in policies)
    _, late, held = policies
    assert isinstance(late, OraclePolicy) and isinstance(held, OraclePolicy)
    assert late.delay_s == late.lead_s > 0 and late.hold_s == 0 and held.hold_s > 0
    # the late reference never has more replicas Ready than the plan's own schedule needs
    result = sim.run(trace, late)
    assert result.accelerator_hours > 0 and result.requests == len(trace.requests)
