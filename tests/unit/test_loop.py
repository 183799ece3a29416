"""The reconcile loop end to end in one process: the in-memory store, a real NodeRegistry, the
in-process executor with simulated engines, and a frozen wall clock. Each test calls
``run_once`` (observe -> decide -> commit -> act) and reads the store and the executor."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from controlplane.catalog import load_catalog
from controlplane.domain.autoscaling import AppliedTarget
from controlplane.domain.capacity import CapacityRecord, CapacitySpec, CapacityStatus, LatencyClass, Phase
from controlplane.domain.demand import GatewayDemand
from controlplane.domain.events import EventRecord
from controlplane.domain.nodes import DeviceTelemetry, GiB, NodeRegistration
from controlplane.domain.replicas import ReplicaRecord, ReplicaState
from controlplane.errors import Conflict, InvalidArgument, StoreUnavailable
from controlplane.executor.inprocess import InProcessExecutor
from controlplane.fleet.registry import NodeRegistry
from controlplane.fleet.types import FleetTiming
from controlplane.reconcile.autoscaler import AutoscalerSettings, LiveAutoscaler
from controlplane.reconcile.launch import EngineSettings
from controlplane.reconcile.loop import Reconciler
from controlplane.store import keys
from controlplane.store.base import Fence, Fenced, KeyValue
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import FakeClock
from tokenfab.errors import Backoff

S = ReplicaState
CATALOG = load_catalog()
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
TIMING = FleetTiming(heartbeat_interval_s=1.0, suspect_after_missed=3, lost_after_s=10.0)


class Wall:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class FlakyStore(MemoryStore):
    """The in-memory store, with chosen compare-and-swap writes losing their race."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_creates = False
        self.lose_puts: set[str] = set()
        self.refuse_puts: dict[str, Exception] = {}  # key prefix -> what a plain put raises
        self.fail_reads: list[Exception] = []  # what the next reads of the replicas raise, in turn

    async def list_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        if prefix == keys.REPLICAS and self.fail_reads:
            raise self.fail_reads.pop(0)
        return await super().list_prefix(prefix)

    async def put(self, key: str, value: bytes, *, lease: int = 0, fence: Fence | None = None) -> int:
        for prefix, error in self.refuse_puts.items():
            if key.startswith(prefix):
                raise error
        return await super().put(key, value, lease=lease, fence=fence)

    async def create_all(self, items: list[tuple[str, bytes]], *, fence: Fence | None = None) -> int | None:
        return None if self.lose_creates else await super().create_all(items, fence=fence)

    async def compare_and_put(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: int = 0,
        fence: Fence | None = None,
    ) -> int | None:
        if key in self.lose_puts:
            return None
        return await super().compare_and_put(
            key, value, expected_mod_revision=expected_mod_revision, lease=lease, fence=fence
        )


async def world(
    clock: FakeClock,
    store: MemoryStore,
    *,
    fence: Fence | None = None,
    autoscaler: LiveAutoscaler | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> tuple[Reconciler, InProcessExecutor, Wall, NodeRegistry]:
    registry = NodeRegistry(store, timing=TIMING, clock=clock)
    await registry.start(monitor=False)
    registration = NodeRegistration.model_validate({
        "node_id": "n1", "cluster": "c1", "vendor": "ascend",
        "devices": [{"uuid": f"n1-{i}", "index": i, "model": "910B3", "memory_bytes": 64 * GiB} for i in range(4)],
    })  # fmt: skip
    await registry.register(registration)
    await registry.heartbeat("n1", [DeviceTelemetry(index=i, utilization_percent=10) for i in range(4)])
    executor = InProcessExecutor("c1", ["n1"], clock=clock)
    wall = Wall()
    reconciler = Reconciler(
        store, CATALOG, registry, {"c1": executor}, wall=wall,
        engines=EngineSettings(sim_start_delay_s=0.0),
        fence=(lambda: fence) if fence is not None else None, autoscaler=autoscaler,
        interval_s=3600.0, sleep=sleep or no_sleep,
        backoff=Backoff(base_s=2.0, cap_s=30.0, rng=random.Random(14)),
    )  # fmt: skip
    return reconciler, executor, wall, registry


async def no_sleep(seconds: float) -> None:
    raise AssertionError(f"the loop backed off {seconds} s")


async def ask(
    store: MemoryStore, target: float = 2000, rid: str = "cr-1", *, autoscaled: bool = False
) -> None:
    spec = CapacitySpec(
        model="qwen2.5-7b-instruct",
        output_tokens_per_second=target,
        latency=LatencyClass(ttft_p95_ms=2000, tpot_p95_ms=100),
        autoscaling={"enabled": autoscaled},
    )
    record = CapacityRecord(
        id=rid, tenant="t", spec=spec, status=CapacityStatus(phase=Phase.PENDING), created_at=NOW
    )
    await store.put(keys.capacity_request(rid), record.model_dump_json().encode())


async def replicas(store: MemoryStore) -> dict[str, ReplicaRecord]:
    kvs, _ = await store.list_prefix(keys.REPLICAS)
    return {r.id: r for r in (ReplicaRecord.model_validate_json(kv.value) for kv in kvs)}


async def request(store: MemoryStore, rid: str = "cr-1") -> CapacityRecord:
    kv = await store.get(keys.capacity_request(rid))
    assert kv is not None
    return CapacityRecord.model_validate_json(kv.value)


async def events(store: MemoryStore) -> list[EventRecord]:
    kvs, _ = await store.list_prefix(keys.EVENTS)
    return [EventRecord.model_validate_json(kv.value) for kv in kvs]


async def test_a_request_is_placed_started_and_becomes_ready(clock: FakeClock) -> None:
    store = MemoryStore()
    reconciler, executor, wall, _ = await world(clock, store)
    await ask(store)
    landed = await reconciler.run_once()
    assert landed.creates and landed.creates == tuple(landed.decision.creates)
    stored = await replicas(store)
    assert {r.id for r in landed.creates} == set(stored) == set(executor.starts)
    assert all(r.state is S.STARTING for r in stored.values())  # started by act, the move landed
    wall.now += timedelta(seconds=5)
    clock.advance(5)
    await reconciler.run_once()
    stored = await replicas(store)
    assert all(r.state is S.READY for r in stored.values())
    assert all(r.endpoint.startswith("inproc://c1/") for r in stored.values())
    assert (await request(store)).status.phase is Phase.READY
    assert reconciler.replicas_by_node == {"n1": len(stored)}


async def test_a_lost_create_race_starts_nothing_and_leaves_the_decision_whole(clock: FakeClock) -> None:
    store = FlakyStore()
    reconciler, executor, _, _ = await world(clock, store)
    await ask(store)
    store.lose_creates = True
    landed = await reconciler.run_once()
    assert landed.decision.creates  # what was decided, unedited
    assert landed.creates == ()
    assert await replicas(store) == {}
    assert executor.starts == []
    store.lose_creates = False  # the next pass decides again from fresh reads
    landed = await reconciler.run_once()
    assert set(executor.starts) == {r.id for r in landed.creates} == set(await replicas(store))


async def test_a_lost_transition_race_records_no_event_and_stops_nothing(clock: FakeClock) -> None:
    store = FlakyStore()
    reconciler, executor, wall, _ = await world(clock, store)
    await ask(store)
    await reconciler.run_once()
    wall.now += timedelta(seconds=5)
    clock.advance(5)
    await reconciler.run_once()
    ready = sorted(await replicas(store))
    executor.fail(ready[0], "engine crashed")
    store.lose_puts = {keys.replica(ready[0])}
    wall.now += timedelta(seconds=5)
    landed = await reconciler.run_once()
    failed = [r for r in landed.decision.updates if r.id == ready[0]]
    assert failed and failed[0].state is S.FAILED  # decided
    assert ready[0] not in {r.id for r in landed.updates}  # but did not land
    assert all(e.replica_id != ready[0] for e in landed.events)
    assert all(e.replica_id != ready[0] for e in await events(store))
    assert (await replicas(store))[ready[0]].state is S.READY  # unchanged in the store
    store.lose_puts = set()
    wall.now += timedelta(seconds=1)
    landed = await reconciler.run_once()  # lands now: the failure and its replacement are recorded
    assert {e.kind for e in await events(store) if e.replica_id == ready[0]} >= {"replica_failed"}
    assert (await replicas(store))[ready[0]].state is S.FAILED


async def test_a_fenced_leader_commits_nothing_and_acts_on_nothing(clock: FakeClock) -> None:
    store = MemoryStore()
    lease = await store.grant_lease(10)
    await store.put("/tokenfab/leader", b"me", lease=lease)
    kv = await store.get("/tokenfab/leader")
    assert kv is not None
    reconciler, executor, _, _ = await world(
        clock, store, fence=Fence("/tokenfab/leader", kv.create_revision)
    )
    await ask(store)
    await store.revoke_lease(lease)  # leadership lost before the pass
    with pytest.raises(Fenced):
        await reconciler.run_once()
    assert await replicas(store) == {}
    assert await events(store) == []
    assert executor.starts == []


async def test_node_events_are_recorded_once_they_commit(clock: FakeClock) -> None:
    store = MemoryStore()
    reconciler, _, wall, registry = await world(clock, store)
    await reconciler.run_once()
    assert await events(store) == []  # the first look only remembers
    await registry.cordon("n1", "maintenance")
    wall.now += timedelta(seconds=1)
    landed = await reconciler.run_once()
    assert [(e.kind, e.node_id) for e in landed.events] == [("node_state", "n1")]
    assert [(e.kind, e.message) for e in await events(store)] == [("node_state", landed.events[0].message)]


async def scaled_world(clock: FakeClock, store: FlakyStore) -> tuple[Reconciler, InProcessExecutor, Wall]:
    """One autoscaled request, Ready on one replica, and the gateways offering it far more."""
    autoscaler = LiveAutoscaler(store, CATALOG, settings=AutoscalerSettings(interval_s=1.0))
    reconciler, executor, wall, _ = await world(clock, store, autoscaler=autoscaler)
    await ask(store, 500, autoscaled=True)
    for _ in range(2):
        await reconciler.run_once()
        wall.now += timedelta(seconds=5)
        clock.advance(5)
    assert [r.state for r in (await replicas(store)).values()] == [S.READY]
    offered = GatewayDemand(
        request_id="cr-1", instance="gw", at=wall.now, window_s=30.0, offered_requests_per_second=20.0,
        offered_input_tokens_per_second=0.0, offered_output_tokens_per_second=6000.0, queued=40,
    )  # fmt: skip
    await store.put(keys.gateway_demand("cr-1", "gw"), offered.model_dump_json().encode())
    return reconciler, executor, wall


@pytest.mark.parametrize("refusal", [OSError("etcd unavailable"), Fenced("a successor leads")])
async def test_an_autoscaler_target_that_does_not_land_applies_nothing(
    clock: FakeClock, refusal: Exception
) -> None:
    store = FlakyStore()
    reconciler, executor, wall = await scaled_world(clock, store)
    assert reconciler.autoscaler is not None
    before, started = await replicas(store), list(executor.starts)
    history = (await store.list_prefix(keys.AUTOSCALER_HISTORY))[0]
    targets = reconciler.autoscaler.last_targets
    assert targets.get("cr-1", 500.0) == 500.0  # the reserved target, held
    store.refuse_puts = {keys.AUTOSCALER_TARGETS: refusal}
    if isinstance(refusal, Fenced):
        with pytest.raises(Fenced):  # the whole pass: its replica writes come after the target
            await reconciler.run_once()
    else:
        landed = await reconciler.run_once()
        assert landed.unscaled == {"cr-1"}
        assert [r.request_id for r in landed.decision.creates] != []  # sized for the planned target
        assert landed.creates == () and landed.updates == () and landed.statuses == ()
    assert await replicas(store) == before and executor.starts == started
    assert await store.get(keys.autoscaler_target("cr-1")) is None
    assert (await store.list_prefix(keys.AUTOSCALER_HISTORY))[0] == history  # no scale-up recorded
    assert reconciler.autoscaler.last_targets.get("cr-1", 500.0) == 500.0  # what stands is what was there

    store.refuse_puts = {}  # the next decision lands, and the replicas follow it
    wall.now += timedelta(seconds=2)
    landed = await reconciler.run_once()
    kv = await store.get(keys.autoscaler_target("cr-1"))
    assert kv is not None
    target = AppliedTarget.model_validate_json(kv.value).output_tokens_per_second
    assert target > 500 and reconciler.autoscaler.last_targets == {"cr-1": target}
    assert landed.creates and set(executor.starts) > set(started)


async def started(reconciler: Reconciler, passes: int) -> None:
    """Yield to the loop's task until it has run ``passes`` passes (no wall clock: it never sleeps
    here, the backoff is injected and the pace is an hour)."""
    for _ in range(10_000):
        if reconciler.passes >= passes:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{reconciler.passes} passes, expected {passes}")


def pass_failures(logs: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(e["log_level"], e["retryable"]) for e in logs if e["event"] == "reconcile.pass_failed"]


async def test_a_pass_failing_with_a_temporary_error_is_retried_after_a_growing_jittered_backoff(
    clock: FakeClock,
) -> None:
    store = FlakyStore()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    reconciler, executor, _, _ = await world(clock, store, sleep=sleep)
    await ask(store)
    store.fail_reads = [StoreUnavailable("etcd away"), ConnectionResetError("reset")]
    with capture_logs() as logs:
        await reconciler.start()
        try:
            await started(reconciler, 1)
        finally:
            await reconciler.stop()
    assert len(slept) == 2 and 1.0 <= slept[0] <= 2.0 and 2.0 <= slept[1] <= 4.0  # base 2 s, doubled
    assert pass_failures(logs) == [("warning", True), ("warning", True)]
    errors = reconciler.metrics.registry.get_sample_value("tokenfab_reconcile_errors_total", {"step": "pass"})
    assert errors == 2
    assert set(executor.starts) == set(await replicas(store))  # the retry placed and started
    assert reconciler.backoff.attempt == 0  # a pass that ran resets the backoff


async def test_a_lost_race_is_retried_at_once(clock: FakeClock) -> None:
    store = FlakyStore()
    reconciler, _, _, _ = await world(clock, store)
    store.fail_reads = [Conflict("lost a race")]
    assert await reconciler.attempt() == 0.0  # re-read and decide again, no backoff
    assert reconciler.backoff.attempt == 0


async def test_a_pass_failing_with_a_permanent_error_is_logged_and_the_next_pass_runs(
    clock: FakeClock,
) -> None:
    store = FlakyStore()
    reconciler, executor, _, _ = await world(clock, store)  # backing off would fail the test
    await ask(store)
    store.fail_reads = [InvalidArgument("spec", "refused"), KeyError("a bug")]
    with capture_logs() as logs:
        assert await reconciler.attempt() is None  # not retried early: the loop goes on at its pace
        assert await reconciler.attempt() is None
        assert reconciler.passes == 0
        assert await reconciler.attempt() is None  # the next pass runs as if nothing happened
    assert pass_failures(logs) == [("error", False), ("error", False)]
    assert reconciler.passes == 1
    assert executor.starts and set(executor.starts) == set(await replicas(store))
