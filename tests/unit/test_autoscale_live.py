"""The live autoscaler's pieces: applied targets through decide(), ceilings, the guard rails, the
bounded history and the modes, on the in-memory store (the same Store contract as etcd)."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from datetime import timedelta

import pytest

from controlplane.api.capacity_service import record_to_pb, spec_from_pb
from controlplane.autoscale.context import floor_replicas
from controlplane.autoscale.policy import ScalingContext, TokenfabConfig, TokenfabPolicy, UnitCapacity
from controlplane.autoscale.signals import ReplicaSample, aggregate
from controlplane.capacity.tenants import Tenant
from controlplane.catalog import load_catalog
from controlplane.catalog.perf import Workload, prefill_chunk_tokens
from controlplane.domain.autoscaling import AppliedTarget, DecisionRecord, Mode, ModeRecord
from controlplane.domain.capacity import CapacitySpec, Phase
from controlplane.domain.replicas import ReplicaState
from controlplane.errors import InvalidArgument
from controlplane.executor.expand import EngineConfig, expand_process
from controlplane.reconcile.autoscaler import AutoscalerSettings, LiveAutoscaler, Tick, sample_of
from controlplane.reconcile.decide import decide
from controlplane.reconcile.launch import EngineSettings, build_launch
from controlplane.reconcile.rules import surplus
from controlplane.reconcile.scaling import applied_target, ceiling_replicas, gist, learned_cold_start_s
from controlplane.reconcile.world import Seen, World
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.test_reconcile import CFG, NOW, fleet, replica, request
from tokenfab.v1 import capacity_pb2, executor_pb2

S = ReplicaState
CATALOG = load_catalog()


def auto(**over: object) -> dict[str, object]:
    return {"autoscaling": {"enabled": True, **over}}


def world(requests: list, replicas: list, targets: dict[str, float]) -> World:
    running = {r.id: Seen("ready") for r in replicas if r.state in (S.READY, S.DRAINING)}
    return World(
        NOW, requests, replicas, fleet(), {"c1": running, "c2": {}},
        {"c1": frozenset({"h100-0"}), "c2": frozenset({"br-0"})}, targets,
    )  # fmt: skip


def new_ids() -> object:
    counter = itertools.count()
    return lambda _request: f"new-{next(counter)}"


# -- pure pieces ----------------------------------------------------------------------------------


def test_applied_target_never_goes_below_the_floor_unless_scaled_to_zero() -> None:
    assert applied_target(5, 1000.0, 3000.0, scale_to_zero=False) == 5000.0
    assert applied_target(1, 1000.0, 3000.0, scale_to_zero=False) == 3000.0
    assert applied_target(0, 1000.0, 3000.0, scale_to_zero=False) == 3000.0
    assert applied_target(0, 1000.0, 3000.0, scale_to_zero=True) == 0.0
    assert floor_replicas(3000.0, 1000.0) == 3
    assert floor_replicas(3001.0, 1000.0) == 4
    assert floor_replicas(10.0, 1000.0) == 1


def test_the_tightest_ceiling_binds_and_is_named() -> None:
    unit = UnitCapacity(1000.0, 4000.0, 256, cost_per_hour=10.0, accelerator="H100", tp=2)
    rec = request(3000, **auto(max_output_tokens_per_second=8000, max_spend_per_hour=60))
    free = ceiling_replicas(
        rec, unit, 3, free_output_tps=2000.0, tenant=None, tenant_spend_elsewhere=0,
        tenant_accelerators_elsewhere=0,
    )  # fmt: skip
    assert free.replicas == 5 and free.why == "free fleet capacity"
    budget = ceiling_replicas(
        rec, unit, 3, free_output_tps=1e6, tenant=None, tenant_spend_elsewhere=0,
        tenant_accelerators_elsewhere=0,
    )  # fmt: skip
    assert budget.replicas == 6 and budget.why == "the request's budget"
    tenant = Tenant("t", max_accelerators=20, max_spend_per_hour=1000)
    quota = ceiling_replicas(
        rec, unit, 3, free_output_tps=1e6, tenant=tenant, tenant_spend_elsewhere=0,
        tenant_accelerators_elsewhere=12,
    )  # fmt: skip
    assert quota.replicas == 4 and "accelerator quota" in quota.why
    # a free slot predicted a hair below the unit (a calibration factor of 0.9999) still counts
    hair = ceiling_replicas(
        request(3000, **auto()), unit, 1, free_output_tps=999.8, tenant=None, tenant_spend_elsewhere=0,
        tenant_accelerators_elsewhere=0,
    )  # fmt: skip
    assert hair.replicas == 2


def test_cold_start_is_learned_from_the_ready_replicas() -> None:
    ready = [
        replica("a", S.READY).model_copy(update={"created_at": NOW - timedelta(seconds=s), "updated_at": NOW})
        for s in (30, 50, 400)
    ]
    assert learned_cold_start_s(ready) == 50
    assert learned_cold_start_s([replica("b", S.STARTING)]) is None


def test_a_percentile_of_zero_means_nothing_finished() -> None:
    stats = executor_pb2.EngineStats(output_tokens_per_second=900, finished=20, tpot_p95_s=0, ttft_p95_s=0.4)
    sample = sample_of("r", stats, 100.0, 10.0)
    assert sample.requests_per_s == 2.0 and math.isnan(sample.tpot_p95_s) and sample.ttft_p95_s == 0.4


def test_prefill_chunk_keeps_a_step_within_the_tpot_target() -> None:
    model, slow = CATALOG.model("qwen2.5-72b-instruct"), CATALOG.accelerator("910C")
    tight = prefill_chunk_tokens(model, slow, 2, model.dtypes[0], Workload(600, 160, 1.0, 0.05))
    loose = prefill_chunk_tokens(model, slow, 2, model.dtypes[0], Workload(600, 160, 1.0, 0.2))
    assert 64 <= tight < loose <= 8192


def test_the_launch_carries_the_chunk_for_simulated_and_vllm_engines() -> None:
    record = replica("r", S.PENDING)
    workload = Workload(1024, 256, 1.0, 0.05)
    simulated = build_launch(record, CATALOG, EngineSettings(), workload)
    assert simulated.simulated.chunk_tokens > 0
    assert build_launch(record, CATALOG, EngineSettings()).simulated.chunk_tokens == 0
    real = build_launch(
        record.model_copy(update={"engine": "vllm"}), CATALOG, EngineSettings(mode="real"), workload
    )
    argv = list(expand_process(real, EngineConfig(CATALOG)).argv)  # the executor builds the command
    assert argv[argv.index("--max-num-batched-tokens") + 1] == str(simulated.simulated.chunk_tokens)


def test_a_slow_tpot_without_queues_is_not_a_reason_to_scale() -> None:
    policy = TokenfabPolicy(TokenfabConfig())
    unit = UnitCapacity(1000.0, 4000.0, 256, 10.0)

    def ctx(waiting: int, ttft: float, tpot: float) -> ScalingContext:
        samples = [
            ReplicaSample(f"r{i}", 0.0, 800.0, 300.0, 2.0, 10, waiting if i == 0 else 0, 0.1, ttft, tpot)
            for i in range(3)
        ]
        return ScalingContext(
            "cr", aggregate(0.0, ["r0", "r1", "r2"], samples), 3, 3, 3, 10, lambda i, o: unit,
            ttft_target_s=1.0, tpot_target_s=0.05,
        )  # fmt: skip

    slow_engine, _ = policy.decide(ctx(1, 0.5, 0.07), policy.initial(), 0.0)
    assert slow_engine.desired == 3 and "breach" not in slow_engine.reason
    queueing, _ = policy.decide(ctx(1, 1.5, 0.04), policy.initial(), 0.0)
    assert queueing.desired == 4 and "SLO breach" in queueing.reason


# -- decide() with applied targets ----------------------------------------------------------------


def test_an_applied_target_above_the_reserved_one_adds_replicas() -> None:
    rec = request(3000, **auto())
    live = [replica("a", S.READY, tps=3000, devices=(0,))]
    held = decide(world([rec], live, {}), CATALOG, CFG, new_id=new_ids())
    assert not held.creates
    scaled = decide(world([rec], live, {rec.id: 5500.0}), CATALOG, CFG, new_id=new_ids())
    assert scaled.creates
    assert sum(r.predicted_output_tokens_per_second for r in [*live, *scaled.creates]) >= 5500
    status = scaled.statuses[rec.id]
    assert status.target_output_tokens_per_second == 5500.0 and status.phase is Phase.READY
    assert "not yet placed" not in status.conditions[0].message  # planned counts as placed


def test_a_lowered_applied_target_drains_down_to_the_floor_only() -> None:
    rec = request(3000, **auto())
    live = [replica(x, S.READY, tps=3000, devices=(i,)) for i, x in enumerate("ab")]
    down = decide(world([rec], live, {rec.id: 3000.0}), CATALOG, CFG, new_id=new_ids())
    assert [r.state for r in down.updates] == [S.DRAINING] and len(down.stops) == 1


def test_scaled_to_zero_drains_everything_and_says_so() -> None:
    rec = request(3000, **auto(scale_to_zero=True))
    live = [replica("a", S.READY, tps=3000)]
    out = decide(world([rec], live, {rec.id: 0.0}), CATALOG, CFG, new_id=new_ids())
    assert [r.state for r in out.updates] == [S.DRAINING] and not out.creates
    gone = decide(world([rec], [replica("a", S.STOPPED)], {rec.id: 0.0}), CATALOG, CFG, new_id=new_ids())
    assert not gone.creates and gone.statuses[rec.id].conditions[0].reason == "ScaledToZero"


# -- the API shape --------------------------------------------------------------------------------


def test_a_ceiling_below_the_floor_is_refused_naming_the_field() -> None:
    spec = capacity_pb2.CapacitySpec(
        model="qwen2.5-7b-instruct", output_tokens_per_second=5000,
        latency=capacity_pb2.LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=50),
        autoscaling=capacity_pb2.AutoscalingSpec(enabled=True, max_output_tokens_per_second=4000),
    )  # fmt: skip
    with pytest.raises(InvalidArgument) as err:
        spec_from_pb(spec, True)
    assert err.value.field == "spec.autoscaling.max_output_tokens_per_second"
    spec.autoscaling.max_output_tokens_per_second = 9000
    spec.autoscaling.max_spend_per_hour = -1
    with pytest.raises(InvalidArgument) as err:
        spec_from_pb(spec, True)
    assert err.value.field == "spec.autoscaling.max_spend_per_hour"


def test_autoscaling_survives_the_round_trip() -> None:
    rec = request(3000, **auto(max_output_tokens_per_second=9000, advisory=True))
    back = spec_from_pb(record_to_pb(rec).spec, True)
    assert back.autoscaling == rec.spec.autoscaling
    assert not record_to_pb(request(3000)).spec.HasField("autoscaling")


# -- the live loop's part, on the in-memory store -------------------------------------------------


def busy(replica_id: str, tps: float, waiting: int = 0, ttft: float = 0.3) -> executor_pb2.ReplicaObservation:
    return executor_pb2.ReplicaObservation(
        replica_id=replica_id, state="ready",
        stats=executor_pb2.EngineStats(
            input_tokens_per_second=tps * 4, output_tokens_per_second=tps, running=20, waiting=waiting,
            kv_cache_usage=0.3, ttft_p95_s=ttft, tpot_p95_s=0.03, finished=int(tps / 256 * 10),
        ),
    )  # fmt: skip


async def test_demand_raises_the_target_persists_it_and_explains_it() -> None:
    store = MemoryStore()
    scaler = LiveAutoscaler(store, CATALOG, settings=AutoscalerSettings(interval_s=1.0, history_limit=3))
    rec = request(3000, **auto())
    ready = [
        replica(x, S.READY, tps=3000, devices=(i,)).model_copy(
            update={"created_at": NOW - timedelta(seconds=40)}
        )
        for i, x in enumerate(["a"])
    ]
    at = NOW
    targets: dict[str, float] = {}
    for step in range(6):  # demand near the one replica's capacity, with a queue: scale up at once
        at = NOW + timedelta(seconds=step * 2)
        targets = await scaler.tick(Tick(at, [rec], ready, {"a": busy("a", 2900, waiting=12)}, fleet()))
    assert targets[rec.id] > 3000
    kv = await store.get(keys.autoscaler_target(rec.id))
    assert (
        kv is not None
        and AppliedTarget.model_validate_json(kv.value).output_tokens_per_second == targets[rec.id]
    )
    history, _ = await store.list_prefix(keys.autoscaler_history(rec.id))
    decisions = [DecisionRecord.model_validate_json(h.value) for h in history]
    assert len(decisions) == 1  # the same unplaced scale-up is not recorded again every tick
    up = decisions[0]
    assert up.action == "scale_up" and up.applied and "replicas" in up.reason
    assert up.inputs["waiting"] == 12 and up.inputs["cold_start_s"] == 40
    assert up.predicted_utilisation is not None and up.cost_per_hour

    # the history is bounded: the oldest go first (an instance that records every decision)
    chatty = LiveAutoscaler(
        store, CATALOG, settings=AutoscalerSettings(interval_s=1.0, history_limit=3, record_hold_every_s=0.0)
    )
    ticks = [at + timedelta(seconds=2 * (step + 1)) for step in range(5)]
    for when in ticks:
        await chatty.tick(Tick(when, [rec], ready, {"a": busy("a", 2900, waiting=12)}, fleet()))
    history, _ = await store.list_prefix(keys.autoscaler_history(rec.id))
    kept = sorted(DecisionRecord.model_validate_json(h.value).at for h in history)
    assert kept == ticks[-3:]


async def test_missing_metrics_never_scale_down_and_advisory_and_off_apply_nothing() -> None:
    store = MemoryStore()
    scaler = LiveAutoscaler(
        store, CATALOG,
        settings=AutoscalerSettings(interval_s=1.0, policy=replace(TokenfabConfig(), down_delay_s=10.0)),
    )  # fmt: skip
    rec = request(3000, **auto())
    ready = [replica(x, S.READY, tps=3000, devices=(i,)) for i, x in enumerate("ab")]
    await store.put(
        keys.autoscaler_target(rec.id),
        AppliedTarget(request_id=rec.id, output_tokens_per_second=6000, replicas=2, decided_at=NOW)
        .model_dump_json().encode(),
    )  # fmt: skip
    # no metrics at all for a minute: hold, whatever the (absent) demand
    for step in range(30):
        targets = await scaler.tick(Tick(NOW + timedelta(seconds=2 * step), [rec], ready, {}, fleet()))
        assert targets[rec.id] == 6000
    history, _ = await store.list_prefix(keys.autoscaler_history(rec.id))
    reasons = {DecisionRecord.model_validate_json(h.value).reason for h in history}
    assert all("metrics" in r for r in reasons), reasons

    # advisory: the idle replicas would be scaled down, but the target stays
    await store.put(keys.AUTOSCALER_MODE, ModeRecord(mode=Mode.ADVISORY).model_dump_json().encode())
    idle = {"a": busy("a", 10), "b": busy("b", 10)}
    start = NOW + timedelta(seconds=100)
    for step in range(40):
        targets = await scaler.tick(Tick(start + timedelta(seconds=2 * step), [rec], ready, idle, fleet()))
    assert targets[rec.id] == 6000
    history, _ = await store.list_prefix(keys.autoscaler_history(rec.id))
    advisory = [DecisionRecord.model_validate_json(h.value) for h in history]
    down = [d for d in advisory if d.action == "scale_down"]
    assert down and all(d.mode is Mode.ADVISORY and not d.applied for d in down)

    # off: no decisions at all; active again: the scale-down is applied (to the floor)
    await store.put(keys.AUTOSCALER_MODE, ModeRecord(mode=Mode.OFF).model_dump_json().encode())
    before = len(history)
    targets = await scaler.tick(Tick(start + timedelta(seconds=100), [rec], ready, idle, fleet()))
    history, _ = await store.list_prefix(keys.autoscaler_history(rec.id))
    assert targets[rec.id] == 6000 and len(history) == before
    await store.put(keys.AUTOSCALER_MODE, ModeRecord(mode=Mode.ACTIVE).model_dump_json().encode())
    targets = await scaler.tick(Tick(start + timedelta(seconds=110), [rec], ready, idle, fleet()))
    assert targets[rec.id] == 3000

    # the request is cancelled and gone: its target and history go with it
    await scaler.tick(Tick(start + timedelta(seconds=120), [], [], {}, fleet()))
    assert (await store.list_prefix(keys.AUTOSCALER_TARGETS))[0] == []
    assert (await store.list_prefix(keys.AUTOSCALER_HISTORY))[0] == []


def test_the_sample_spec_is_autoscaled_with_a_ceiling() -> None:
    from controlplane.embedded.up import sample_spec

    spec: CapacitySpec = sample_spec()
    assert spec.autoscaling.enabled
    assert spec.autoscaling.max_output_tokens_per_second is not None
    assert spec.autoscaling.max_output_tokens_per_second > spec.output_tokens_per_second


def test_the_demo_demand_rises_falls_and_bursts() -> None:
    from controlplane.embedded.loadgen import DemandShape

    shape = DemandShape(start_s=0.0)
    rates = [shape.rate(t) for t in range(0, int(shape.period_s))]
    assert min(rates) == shape.low and max(rates) == shape.high * shape.burst_factor
    assert shape.rate(shape.period_s * 0.75) == shape.high  # the high half, between bursts
    demo = DemandShape()  # the demo starts late in the low half: the first rise comes early
    assert demo.rate(10) == demo.low and demo.rate(125 + demo.ramp_s) >= demo.high


def test_a_hold_whose_figures_drift_is_not_news() -> None:
    a = "expected 7128 out tok/s in 4s needs 6.46 replicas at 1103 tok/s each (80% of 1378), plus 0.01 to drain"
    b = "expected 7254 out tok/s in 4s needs 6.58 replicas at 1103 tok/s each (80% of 1378 at the SLO)"
    assert gist(a) == gist(b)
    assert gist("holding: need 2.68 (peak 7.00)") != gist(a)


async def test_a_new_leader_resumes_the_policy_memory_from_etcd() -> None:
    store = MemoryStore()
    settings = AutoscalerSettings(interval_s=1.0)
    rec = request(3000, **auto())
    ready = [replica("a", S.READY, tps=3000).model_copy(update={"created_at": NOW - timedelta(seconds=40)})]
    old = LiveAutoscaler(store, CATALOG, settings=settings)
    for step in range(5):  # the steps the reconciler runs, so the plan (its policy memory) is seen
        tick = Tick(NOW + timedelta(seconds=step * 2), [rec], ready, {"a": busy("a", 1500)}, fleet())
        plan = old.plan(tick, await old.observe(tick))
        assert await old.commit(store, plan) == frozenset()
    (remembered,) = [v.state for v in plan.verdicts if v.request_id == rec.id]
    assert remembered.needs and not math.isnan(remembered.holt.level)
    kv = await store.get(keys.autoscaler_state(rec.id))
    assert kv is not None

    new = LiveAutoscaler(store, CATALOG, settings=settings)  # another instance takes over
    probe = Tick(NOW + timedelta(seconds=12), [rec], ready, {}, fleet())
    view = await new.observe(probe)  # reads only
    assert view.reset and view.stored_states[rec.id] == remembered  # the same smoother, windows and mix
    await store.put(keys.autoscaler_state(rec.id), b'{"holt": "garbled"}')
    view = await new.observe(probe)
    assert view.stored_states[rec.id] == new.policy.initial()  # unreadable: start fresh, not fail

    # a cancelled request's memory goes with it
    gone = rec.model_copy(update={"status": rec.status.model_copy(update={"phase": Phase.CANCELLED})})
    await new.tick(Tick(NOW + timedelta(seconds=30), [gone], [], {}, fleet()))
    assert await store.get(keys.autoscaler_state(rec.id)) is None


def test_surplus_drains_the_dearest_replica_per_token_first() -> None:
    catalog = load_catalog()
    # an H100 at 2.50/h serving 3,000 tok/s costs more per token than a BR104 at 0.75/h serving 2,000
    dear = replica("h100", ReplicaState.READY, tps=3000)
    cheap = replica("br104", ReplicaState.READY, tps=2000).model_copy(update={"accelerator": "BR104"})
    assert [r.id for r in surplus([cheap, dear], 1500.0, catalog=catalog)] == ["h100"]
    # without prices the old order stands: the smallest replica first
    assert [r.id for r in surplus([cheap, dear], 1500.0)] == ["br104"]
    # a replica still starting goes first whatever its price
    starting = replica("s", ReplicaState.STARTING, tps=2000).model_copy(update={"accelerator": "BR104"})
    assert surplus([cheap, dear, starting], 4500.0, catalog=catalog)[0].id == "s"
