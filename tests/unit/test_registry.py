"""Node registry on the in-memory store with a fake clock: the state machine driven by beats."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain.nodes import DeviceHealth, DeviceTelemetry, GiB, NodeRegistration, NodeState
from controlplane.errors import FailedPrecondition, InvalidArgument, NotFound
from controlplane.fleet.registry import NodeRegistry
from controlplane.fleet.types import CommandKind, FleetTiming, NodeCommand
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import FakeClock

TIMING = FleetTiming(heartbeat_interval_s=1.0, suspect_after_missed=3, lost_after_s=10.0)


def registration(node_id: str = "n1", devices: int = 2, **over: Any) -> NodeRegistration:
    return NodeRegistration.model_validate(
        {
            "node_id": node_id,
            "cluster": "c1",
            "vendor": "ascend",
            "devices": [
                {"uuid": f"{node_id}-{i}", "index": i, "model": "910B3", "memory_bytes": 64 * GiB}
                for i in range(devices)
            ],
            **over,
        }
    )


def beats(n: int = 2, **over: Any) -> list[DeviceTelemetry]:
    return [DeviceTelemetry(index=i, utilization_percent=50, **over) for i in range(n)]


async def make(
    clock: FakeClock, store: MemoryStore | None = None, **kw: Any
) -> tuple[NodeRegistry, MemoryStore]:
    store = store or MemoryStore()
    registry = NodeRegistry(store, timing=TIMING, clock=clock, **kw)
    await registry.start(monitor=False)
    return registry, store


async def test_register_then_first_beat_makes_ready(clock: FakeClock) -> None:
    registry, store = await make(clock)
    view, created = await registry.register(registration())
    assert created
    assert view.state is NodeState.REGISTERING
    assert await registry.heartbeat("n1", beats()) is NodeState.READY
    stored = await store.get(keys.node("n1"))
    assert stored is not None
    assert b'"state":"ready"' in stored.value


async def test_heartbeats_do_not_write_the_store(clock: FakeClock) -> None:
    registry, store = await make(clock)
    await registry.register(registration())
    await registry.heartbeat("n1", beats())
    revision = store.revision
    for _ in range(100):
        clock.advance(1.0)
        await registry.heartbeat("n1", beats())
        await registry.check()
    assert store.revision == revision  # 100 beats, zero writes
    assert registry.get("n1").telemetry[0].utilization_percent == 50


async def test_idempotent_reregistration_writes_nothing(clock: FakeClock) -> None:
    registry, store = await make(clock)
    await registry.register(registration())
    await registry.heartbeat("n1", beats())
    revision = store.revision
    view, created = await registry.register(registration())
    assert not created
    assert view.state is NodeState.READY
    assert store.revision == revision


async def test_silence_makes_suspect_then_lost(clock: FakeClock) -> None:
    registry, _ = await make(clock)
    await registry.register(registration())
    await registry.heartbeat("n1", beats())
    clock.advance(2.4)
    assert await registry.check() == []
    clock.advance(0.2)  # 2.6 s: beats due at 1 s and 2 s missed, the next 0.5 s (the tolerance) late
    assert await registry.check() == [("n1", NodeState.READY, NodeState.SUSPECT)]
    assert "no heartbeat for 2.6s" in registry.get("n1").record.state_reason
    clock.advance(7.3)  # 9.9 s
    assert await registry.check() == []
    clock.advance(0.2)  # 10.1 s
    assert await registry.check() == [("n1", NodeState.SUSPECT, NodeState.LOST)]
    with pytest.raises(FailedPrecondition):
        await registry.heartbeat("n1", beats())


async def test_suspect_recovers_on_beat(clock: FakeClock) -> None:
    registry, _ = await make(clock)
    await registry.register(registration())
    await registry.heartbeat("n1", beats())
    clock.advance(4)
    await registry.check()
    assert registry.get("n1").state is NodeState.SUSPECT
    assert await registry.heartbeat("n1", beats()) is NodeState.READY


async def test_lost_node_reregisters_and_returns(clock: FakeClock) -> None:
    registry, _ = await make(clock)
    await registry.register(registration())
    await registry.heartbeat("n1", beats())
    clock.advance(4)
    await registry.check()
    clock.advance(7)
    await registry.check()
    assert registry.get("n1").state is NodeState.LOST
    view, created = await registry.register(registration())
    assert not created
    assert view.state is NodeState.REGISTERING
    assert await registry.heartbeat("n1", beats()) is NodeState.READY


async def test_cordon_survives_suspect_and_restart(clock: FakeClock) -> None:
    registry, store = await make(clock)
    await registry.register(registration())
    await registry.heartbeat("n1", beats())
    sent: list[NodeCommand] = []

    class Sink:
        def push(self, command: NodeCommand) -> None:
            sent.append(command)

    registry.attach("n1", Sink())
    view = await registry.cordon("n1", "disk swap")
    assert view.state is NodeState.CORDONED
    assert view.record.cordoned
    assert sent == [NodeCommand(CommandKind.CORDON, "disk swap")]
    clock.advance(4)
    await registry.check()
    assert registry.get("n1").state is NodeState.SUSPECT
    assert await registry.heartbeat("n1", beats()) is NodeState.CORDONED
    # a new registry on the same store (control-plane restart) keeps the cordon
    again, _ = await make(clock, store)
    assert again.get("n1").state is NodeState.CORDONED
    assert (await again.uncordon("n1")).state is NodeState.READY


async def test_restart_keeps_nodes_and_gives_grace(clock: FakeClock) -> None:
    registry, store = await make(clock)
    for name in ("a", "b"):
        await registry.register(registration(name))
        await registry.heartbeat(name, beats())
    again, _ = await make(clock, store)
    assert [v.node_id for v in again.nodes()] == ["a", "b"]
    assert {v.state for v in again.nodes()} == {NodeState.READY}
    clock.advance(2.0)
    assert await again.check() == []  # grace: agents get time to reconnect
    await again.heartbeat("a", beats())
    clock.advance(1.5)
    assert await again.check() == [("b", NodeState.READY, NodeState.SUSPECT)]


async def test_device_health_change_is_persisted_once(clock: FakeClock) -> None:
    registry, store = await make(clock)
    await registry.register(registration())
    await registry.heartbeat("n1", beats())
    revision = store.revision
    bad = [DeviceTelemetry(index=0), DeviceTelemetry(index=1, ecc_uncorrected_errors=3,
                                                     health=DeviceHealth.UNHEALTHY, health_reason="3 ECC")]  # fmt: skip
    await registry.heartbeat("n1", bad)
    assert store.revision == revision + 1
    await registry.heartbeat("n1", bad)
    assert store.revision == revision + 1
    assert registry.get("n1").record.device_health[1] == (DeviceHealth.UNHEALTHY, "3 ECC")


async def test_drain_waits_for_workloads(clock: FakeClock) -> None:
    remaining = {"n1": 2}
    registry, _ = await make(clock, workloads=lambda node: remaining.get(node, 0))
    await registry.register(registration())
    await registry.heartbeat("n1", beats())
    assert (await registry.drain("n1", "lease ends")).state is NodeState.DRAINING
    await registry.check()
    assert registry.get("n1").state is NodeState.DRAINING
    remaining["n1"] = 0
    assert await registry.check() == [("n1", NodeState.DRAINING, NodeState.CORDONED)]


async def test_bad_heartbeats(clock: FakeClock) -> None:
    registry, _ = await make(clock)
    with pytest.raises(NotFound):
        await registry.heartbeat("ghost", beats())
    await registry.register(registration())
    with pytest.raises(InvalidArgument) as info:
        await registry.heartbeat("n1", [DeviceTelemetry(index=7)])
    assert info.value.field == "devices[0].index"


async def test_conflicting_writer_is_detected_and_retried(clock: FakeClock) -> None:
    registry, store = await make(clock)
    await registry.register(registration())
    await registry.heartbeat("n1", beats())
    # another instance rewrites the record behind our back (same content, new revision)
    kv = await store.get(keys.node("n1"))
    assert kv is not None
    await store.put(keys.node("n1"), kv.value)
    view = await registry.cordon("n1", "ops")
    assert view.state is NodeState.CORDONED
    stored = await store.get(keys.node("n1"))
    assert stored is not None
    assert b'"cordoned":true' in stored.value


def test_timing_validation() -> None:
    with pytest.raises(InvalidArgument) as info:
        FleetTiming(heartbeat_interval_s=1, suspect_after_missed=3, lost_after_s=2)
    assert info.value.field == "lost_after_s"


async def test_gauges_track_every_change(clock: FakeClock) -> None:
    registry, store = await make(clock)

    def gauge(name: str, **labels: str) -> float:
        value = registry.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    for name in ("a", "b"):
        await registry.register(registration(name))
    assert gauge("tokenfab_nodes", vendor="ascend", state="registering") == 2
    await registry.heartbeat("a", beats())
    await registry.heartbeat("b", beats(ecc_uncorrected_errors=1, health=DeviceHealth.UNHEALTHY))
    assert gauge("tokenfab_nodes", vendor="ascend", state="ready") == 2
    assert gauge("tokenfab_nodes", vendor="ascend", state="registering") == 0
    assert gauge("tokenfab_devices", vendor="ascend", health="unhealthy") == 2
    assert gauge("tokenfab_devices", vendor="ascend", health="healthy") == 2
    await registry.cordon("a")
    assert gauge("tokenfab_nodes", vendor="ascend", state="cordoned") == 1
    # a restarted registry counts what it loads
    again, _ = await make(clock, store)
    assert gauge("tokenfab_nodes", vendor="ascend", state="ready") == 1  # first registry's view
    assert (
        again.metrics.registry.get_sample_value("tokenfab_nodes", {"vendor": "ascend", "state": "cordoned"})
        == 1
    )


async def test_worst_case_detection_is_under_three_seconds_at_the_defaults(clock: FakeClock) -> None:
    """A node that dies right after a beat (the worst phase) is Suspect in under 3 s with the
    default timing (1 s beats, 3 missed), checked as often as the monitor's next deadline says."""
    assert FleetTiming() == TIMING  # the defaults
    registry, _ = await make(clock)
    await registry.register(registration())
    for _ in range(10):
        await registry.heartbeat("n1", beats())
        clock.advance(1.0)
    clock.advance(-1.0)  # back to the last beat: the node dies right after it
    died = clock.now
    while not await registry.check():
        clock.advance(0.01)
        assert clock.now - died < 5, "never suspected"
    assert registry.get("n1").state is NodeState.SUSPECT
    assert clock.now - died < 3.0
