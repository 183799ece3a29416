"""Demand signals: the gateway's view of offered demand, published per request on a lease, and
what the autoscaler does with it (scale from zero; offered rather than served tokens/s)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane.domain.autoscaling import AppliedTarget, DecisionRecord
from controlplane.domain.demand import GatewayDemand, combine
from controlplane.domain.replicas import ReplicaState
from controlplane.gateway.demand import DemandMeter, read_demand
from controlplane.gateway.routes import Lane
from controlplane.reconcile.autoscaler import AutoscalerSettings, LiveAutoscaler, Tick
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import FakeClock
from tests.unit.test_autoscale_live import CATALOG, auto, busy
from tests.unit.test_reconcile import NOW, fleet, replica, request

WALL = datetime(2026, 1, 1, tzinfo=UTC)


def lane(*requests: str) -> Lane:
    return Lane(
        "alpha", "m", requests, reserved_tps=100.0, ttft_budget_s=1.0, scale_to_zero=False, backends=()
    )


async def test_the_meter_counts_offered_demand_queue_and_refusals_per_request() -> None:
    clock = FakeClock()
    meter = DemandMeter(MemoryStore(), "gw-1", window_s=10.0, clock=clock, wall=lambda: WALL)
    one = lane("r1")
    for _ in range(20):
        meter.arrival(one, 100, 200)
    for _ in range(10):
        meter.finished(one, 50)  # finished calls wrote 50 of their 200 allowed tokens
    meter.rejected(one)
    ticket = meter.enqueue(one)
    clock.now += 3.0
    [record] = meter.snapshot({("alpha", "m"): one})
    assert record.offered_requests_per_second == 2.0
    assert record.offered_input_tokens_per_second == 200.0
    assert record.offered_output_tokens_per_second == 100.0  # 2 calls/s x 50 tokens
    assert record.served_output_tokens_per_second == 50.0
    assert (record.rejected_per_second, record.queued, record.oldest_wait_s) == (0.1, 1, 3.0)
    meter.dequeue(one, ticket)
    clock.now += 20.0  # all of it leaves the window
    [idle] = meter.snapshot({("alpha", "m"): one})
    assert (idle.offered_requests_per_second, idle.queued) == (0.0, 0)
    two = meter.snapshot({("alpha", "m"): lane("r1", "r2")})
    assert [r.request_id for r in two] == ["r1", "r2"]


def test_offered_prompt_tokens_are_trued_up_to_what_the_replicas_counted() -> None:
    clock = FakeClock()
    meter = DemandMeter(MemoryStore(), "gw", window_s=10.0, clock=clock, wall=lambda: WALL)
    one = lane("r1")
    for _ in range(10):
        meter.arrival(one, 400, 50)  # the gateway's estimate: 400 prompt tokens (1,600 characters)
    [before] = meter.snapshot({("alpha", "m"): one})
    assert before.offered_input_tokens_per_second == 400.0  # nothing reported yet: the estimate
    meter.finished(one, 50, (400, 300))  # the replica's tokenizer counted 300
    meter.finished(one, 50, (400, 340))
    meter.finished(one, 50)  # a cut stream: no usage reported, no evidence either way
    [after] = meter.snapshot({("alpha", "m"): one})
    assert after.offered_input_tokens_per_second == pytest.approx(400.0 * 640 / 800)
    clock.now += 11.0  # the evidence leaves the window with the arrivals
    meter.arrival(one, 400, 50)
    [later] = meter.snapshot({("alpha", "m"): one})
    assert later.offered_input_tokens_per_second == pytest.approx(40.0)


async def test_instances_publish_on_a_lease_and_are_summed() -> None:
    store = MemoryStore()
    meters = [DemandMeter(store, f"gw-{i}", window_s=10.0, wall=lambda: WALL) for i in range(2)]
    for meter in meters:
        meter.lanes = lambda: {("alpha", "m"): lane("r1")}
        meter.arrival(lane("r1"), 10, 20)
        meter.enqueue(lane("r1"))
        assert await meter.publish() == 1
    total = combine(await read_demand(store))["r1"]
    assert (total.queued, total.offered_requests_per_second) == (2, 0.2)
    await meters[0].stop()  # its lease is revoked: its figures go
    assert [r.instance for r in await read_demand(store)] == ["gw-1"]
    meters[1].lanes = dict  # the request is gone: its key too
    await meters[1].publish()
    assert await read_demand(store) == []


def demand(request_id: str, *, queued: int = 0, offered: float = 0.0) -> GatewayDemand:
    return GatewayDemand(
        request_id=request_id, instance="gw", at=WALL, window_s=30.0, offered_requests_per_second=1.0,
        offered_input_tokens_per_second=0.0, offered_output_tokens_per_second=offered, queued=queued,
    )  # fmt: skip


async def test_a_call_queued_at_the_gateway_wakes_a_request_scaled_to_zero() -> None:
    store = MemoryStore()
    scaler = LiveAutoscaler(store, CATALOG, settings=AutoscalerSettings(interval_s=1.0))
    rec = request(3000, **auto(scale_to_zero=True))
    zero = AppliedTarget(request_id=rec.id, output_tokens_per_second=0.0, replicas=0, decided_at=NOW)
    await store.put(keys.autoscaler_target(rec.id), zero.model_dump_json().encode())
    targets = await scaler.tick(Tick(NOW, [rec], [], {}, fleet()))
    assert targets[rec.id] == 0.0  # idle: stays at zero
    await store.put(keys.gateway_demand(rec.id, "gw"), demand(rec.id, queued=1).model_dump_json().encode())
    targets = await scaler.tick(Tick(NOW + timedelta(seconds=2), [rec], [], {}, fleet()))
    assert targets[rec.id] == 3000.0  # the reserved floor is placed again
    # stored (a new leader keeps it) and explained in the history
    stored = await store.get(keys.autoscaler_target(rec.id))
    assert stored is not None
    assert AppliedTarget.model_validate_json(stored.value).output_tokens_per_second == 3000.0
    history, _ = await store.list_prefix(keys.autoscaler_history(rec.id))
    (entry,) = [DecisionRecord.model_validate_json(kv.value) for kv in history]
    assert (entry.action, entry.applied, entry.current_replicas) == ("scale_up", True, 0)
    assert entry.desired_replicas >= 1 and entry.target_output_tokens_per_second == 3000.0
    assert entry.reason.startswith("waking from zero: 1 call(s) queued at the gateway")


async def test_an_advisory_request_at_zero_records_the_wake_but_stays_at_zero() -> None:
    store = MemoryStore()
    scaler = LiveAutoscaler(store, CATALOG, settings=AutoscalerSettings(interval_s=1.0))
    rec = request(3000, **auto(scale_to_zero=True, advisory=True))
    zero = AppliedTarget(request_id=rec.id, output_tokens_per_second=0.0, replicas=0, decided_at=NOW)
    await store.put(keys.autoscaler_target(rec.id), zero.model_dump_json().encode())
    await store.put(keys.gateway_demand(rec.id, "gw"), demand(rec.id, queued=2).model_dump_json().encode())
    targets = await scaler.tick(Tick(NOW, [rec], [], {}, fleet()))
    assert targets[rec.id] == 0.0
    history, _ = await store.list_prefix(keys.autoscaler_history(rec.id))
    (entry,) = [DecisionRecord.model_validate_json(kv.value) for kv in history]
    assert (entry.action, entry.applied, entry.mode.value) == ("scale_up", False, "advisory")


async def test_offered_demand_counts_where_engines_see_only_what_they_serve() -> None:
    async def target(offered: GatewayDemand | None) -> float:
        store = MemoryStore()
        if offered is not None:
            await store.put(keys.gateway_demand("cr-1", "gw"), offered.model_dump_json().encode())
        scaler = LiveAutoscaler(store, CATALOG, settings=AutoscalerSettings(interval_s=1.0))
        rec = request(3000, **auto())
        ready = [
            replica("a", ReplicaState.READY, tps=3000).model_copy(
                update={"created_at": NOW - timedelta(seconds=40)}
            )
        ]
        got: dict[str, float] = {}
        for step in range(6):
            at = NOW + timedelta(seconds=step * 2)
            got = await scaler.tick(Tick(at, [rec], ready, {"a": busy("a", 1500)}, fleet()))
        return got[rec.id]

    assert await target(None) == 3000.0  # the engine serves half its capacity: nothing to do
    assert await target(demand("cr-1", offered=9000.0, queued=40)) > 3000.0  # the gateway saw 3x that
