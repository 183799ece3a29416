"""The oracle, feasibility and the fleet sized from the trace: pure, on small synthetic traces."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.autoscale.baselines import StaticPolicy
from controlplane.autoscale.feasibility import TtftTarget, feasibility_for
from controlplane.autoscale.oracle import OraclePolicy
from controlplane.autoscale.policy import ScalingContext, UnitCapacity
from controlplane.catalog import load_catalog
from controlplane.simulate.compare import Setup, compare, parse_duration
from controlplane.simulate.oracle import _search, plan_oracle
from controlplane.simulate.run import fleet_replicas, make_policy, scenario_for
from controlplane.simulate.sim import Simulator
from controlplane.simulate.sizing import peak_replicas
from controlplane.simulate.trace import SyntheticDemand, Trace, TraceRequest, synthetic_trace

CATALOG = load_catalog()


def ctx(current: int = 2, *, floor: int = 1, ceiling: int = 100) -> ScalingContext:
    return ScalingContext(
        request_id="r",
        signals=None,
        current=current,
        ready=current,
        floor=floor,
        ceiling=ceiling,
        capacity=lambda i, o: UnitCapacity(100.0, 1000.0, 64, 1.0),
    )


def test_oracle_policy_asks_a_lead_ahead_and_releases_after_the_window() -> None:
    policy = OraclePolicy(window_s=60.0, replicas=(2, 2, 5, 1), lead_s=65.0)
    # at 50 s the window at 120 s is within the lead (50 + 65 = 115 < 120): not yet
    assert policy.decide(ctx(), None, 50.0)[0].desired == 2
    # at 60 s it is (125 s falls in window 2): ask for its 5 replicas now, Ready at 120 s
    assert policy.decide(ctx(), None, 60.0)[0].desired == 5
    # window 2 over, window 3 needs 1: released at the first decision after it
    assert policy.decide(ctx(5), None, 180.0)[0].desired == 1
    # floor and ceiling still apply
    assert policy.decide(ctx(5, ceiling=3), None, 60.0)[0].desired == 3
    with pytest.raises(ValueError, match="window_s"):
        OraclePolicy(window_s=0.0, replicas=(1,), lead_s=0.0)


@given(st.integers(1, 40), st.integers(1, 40))
def test_search_finds_the_smallest_passing_count(threshold: int, start: int) -> None:
    calls: list[int] = []

    def ok(n: int) -> bool:
        calls.append(n)
        return n >= threshold

    assert _search(ok, start, 1, 50) == threshold
    assert len(calls) <= 2 * math.ceil(math.log2(50)) + 3
    assert _search(lambda n: False, start, 1, 50) == 50


def test_feasibility_names_context_kv_and_ttft() -> None:
    f = feasibility_for(CATALOG, "qwen2.5-72b-instruct", {"910C": 8}, TtftTarget(1.0))
    assert f.check(1000, 200) is None
    assert (f.check(40_000, 10) or "").startswith("context:")
    # a prompt within the context that no shape prefills within 1 s, even alone in one step
    long_prompt = 30_000
    assert f.prefill_s(long_prompt) > 1.0
    assert (f.check(long_prompt, 10) or "").startswith("ttft:")
    # the length-aware target gives it the time its prefill needs
    aware = feasibility_for(CATALOG, "qwen2.5-72b-instruct", {"910C": 8}, TtftTarget(1.0, 5_000.0))
    assert aware.check(long_prompt, 10) is None
    assert TtftTarget(3.0, 1000.0).for_prompt(2000) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="base_s"):
        TtftTarget(0.0)


def small(trace: Trace, fleet: str = "L20:autox8", **kw: float) -> Simulator:
    scenario = scenario_for(
        trace, CATALOG, model="qwen2.5-7b-instruct", fleet=fleet, ttft_s=3.0, tpot_s=0.1,
        cold_start_s=30.0, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return Simulator(scenario, CATALOG)


def test_infeasible_requests_are_counted_apart_never_as_misses() -> None:
    base = synthetic_trace(SyntheticDemand(base_rate=1.0, mean_input_tokens=500), 300, seed=4)
    # a request beyond the model's context (32k for Qwen2.5-7B) in the middle of the trace
    huge = TraceRequest(150.0, 40_000, 100)
    trace = Trace("t", tuple(sorted((*base.requests, huge), key=lambda r: r.arrival_s)))
    sim = small(trace)
    result = sim.run(trace, StaticPolicy(peak_replicas(trace, sim.declared)))
    assert result.infeasible == 1 and result.infeasible_reasons == {"context": 1}
    assert result.feasible == result.requests - 1
    assert result.slo_attainment == result.met / result.feasible


def test_the_fleet_is_sized_so_that_no_policy_is_capped() -> None:
    trace = synthetic_trace(SyntheticDemand(base_rate=3.0, burst_factor=4.0), 900, seed=5)
    sim = small(trace)
    replicas = fleet_replicas(trace, sim.declared, ttft_s=3.0, tpot_s=0.1)
    slots = sum(len(n.devices) // sim.declared.tp for n in sim.scenario.nodes)
    assert slots >= replicas >= 4
    for name in ("ray_serve", "tokenfab"):
        assert sim.run(trace, make_policy(name, sim, trace)).fleet_capped_s == 0.0
    # a one-node fleet is capped, and says so
    tiny = small(trace, fleet="L20:1x1")
    assert tiny.run(trace, make_policy("ray_serve", tiny, trace)).fleet_capped_s > 0
    # so is a policy clamped to the replica ceiling
    ceiling = Simulator(dataclasses.replace(sim.scenario, max_replicas=1), CATALOG)
    assert ceiling.run(trace, make_policy("ray_serve", ceiling, trace)).fleet_capped_s > 0


def test_the_oracle_meets_its_goal_cheaper_than_static_peak() -> None:
    trace = synthetic_trace(
        SyntheticDemand(base_rate=3.0, drift=0.8, period_s=600.0, mean_input_tokens=800), 1200, seed=6
    )
    sim = small(trace)
    plan = plan_oracle(sim, trace)
    assert len(plan.replicas) == int(trace.duration_s // 60) + 1
    assert plan.trials >= len(plan.replicas)
    oracle = sim.run(trace, make_policy("oracle", sim, trace))
    static = sim.run(trace, make_policy("static_peak", sim, trace))
    assert oracle.slo_attainment >= 0.99
    assert oracle.accelerator_hours < static.accelerator_hours
    # more replicas than the plan never lowers attainment (the search's monotone assumption)
    lead = sim.scenario.cold_start_s + sim.scenario.tick_s
    more = OraclePolicy(plan.window_s, tuple(n + 1 for n in plan.replicas), lead_s=lead)
    assert sim.run(trace, more).slo_attainment >= oracle.slo_attainment
    with pytest.raises(ValueError, match="goal"):
        plan_oracle(sim, trace, goal=1.5)


def test_compare_reports_vs_oracle_and_scores_only_after_the_warmup() -> None:
    trace = synthetic_trace(SyntheticDemand(base_rate=2.0, mean_input_tokens=600), 600, seed=7)
    setup = Setup(model="qwen2.5-7b-instruct", fleet="L20:autox8", cold_start_s=30.0, warmup_until_s=300.0)
    report = compare(trace, CATALOG, ["static_peak"], setup).report()
    scored = sum(1 for r in trace.requests if r.arrival_s >= 300.0)
    assert report["requests"] == scored
    assert report["policies"]["oracle"]["vs_oracle"] == 1.0
    static = report["policies"]["static_peak"]
    assert static["vs_oracle"] == pytest.approx(
        static["accelerator_hours"] / report["oracle"]["accelerator_hours"], rel=1e-2
    )
    # the declared mix comes from the warm-up part only
    warm = [r for r in trace.requests if r.arrival_s < 300.0]
    assert report["setup"]["declared_mix"][0] == round(sum(r.input_tokens for r in warm) / len(warm))
    # and so does its p95 (every request of this mix is feasible), which sizes the shape
    prompts = sorted(r.input_tokens for r in warm)
    assert report["setup"]["declared_p95"][0] == prompts[math.ceil(0.95 * len(prompts)) - 1]
    with pytest.raises(ValueError, match="not inside the trace"):
        compare(trace, CATALOG, [], dataclasses.replace(setup, warmup_until_s=1e6))


@pytest.mark.parametrize(
    ("text", "seconds"), [("86400", 86400.0), ("24h", 86400.0), ("1d", 86400.0), ("90m", 5400.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="warmup-until"):
        parse_duration("tomorrow")
