"""The reconcile decision (pure) and the replica state machine, on hand-made worlds."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.catalog import load_catalog
from controlplane.catalog.perf import Calibration
from controlplane.domain.capacity import CapacityRecord, CapacitySpec, CapacityStatus, LatencyClass, Phase
from controlplane.domain.nodes import Vendor
from controlplane.domain.replicas import (
    TRANSITIONS,
    IllegalReplicaTransition,
    ReplicaRecord,
    ReplicaState,
    check_transition,
)
from controlplane.executor.expand import EngineConfig, expand_process, launch_env
from controlplane.reconcile.decide import decide
from controlplane.reconcile.launch import EngineSettings, build_launch
from controlplane.reconcile.learning import calibration_samples
from controlplane.reconcile.world import Decision, ReconcileConfig, Seen, World
from controlplane.scheduler import NodeSlot, SchedulerConfig

S = ReplicaState
CATALOG = load_catalog()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CFG = ReconcileConfig(start_timeout_s=60, actor_grace_s=10)


def request(target: float = 5000, *, active: bool = True, rid: str = "cr-1", **over: Any) -> CapacityRecord:
    spec = CapacitySpec(
        model="qwen2.5-7b-instruct",
        output_tokens_per_second=target,
        latency=LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=50),
        **over,
    )
    status = CapacityStatus(phase=Phase.PENDING if active else Phase.CANCELLED)
    return CapacityRecord(id=rid, tenant="t", spec=spec, status=status, created_at=NOW)


def replica(rid: str, state: ReplicaState, *, tps: float = 3000, node: str = "h100-0", devices: tuple[int, ...] = (0,),
            age_s: float = 0, cluster: str = "c1", request_id: str = "cr-1") -> ReplicaRecord:  # fmt: skip
    at = NOW - timedelta(seconds=age_s)
    return ReplicaRecord(
        id=rid, request_id=request_id, tenant="t", model="qwen2.5-7b-instruct", vendor=Vendor.NVIDIA,
        accelerator="H100", cluster=cluster, node_id=node, devices=devices, tensor_parallel=len(devices),
        engine="simulated", dtype="bf16", state=state, predicted_output_tokens_per_second=tps,
        created_at=at, updated_at=at,
    )  # fmt: skip


def fleet() -> list[NodeSlot]:
    return [
        NodeSlot("h100-0", "c1", "r1", Vendor.NVIDIA, "H100", tuple((d, 0) for d in range(2))),
        NodeSlot("br-0", "c2", "r1", Vendor.BIREN, "BR104", tuple((d, 0) for d in range(2))),
    ]


def run(
    requests: list[CapacityRecord],
    replicas: list[ReplicaRecord],
    seen: dict[str, dict[str, Seen]] | None = None,
    ray_nodes: dict[str, frozenset[str]] | None = None,
    cfg: ReconcileConfig = CFG,
) -> Decision:
    ids = (f"new-{i}" for i in itertools.count())
    world = World(
        NOW, requests, replicas, fleet(),
        seen if seen is not None else {"c1": {}, "c2": {}},
        ray_nodes if ray_nodes is not None else {"c1": frozenset({"h100-0"}), "c2": frozenset({"br-0"})},
    )  # fmt: skip
    return decide(world, CATALOG, cfg, new_id=lambda _request: next(ids))


def test_transition_table_is_explicit_and_enforced() -> None:
    assert all(reason for reason in TRANSITIONS.values())
    check_transition("r", S.PENDING, S.STARTING)
    for terminal in (S.STOPPED, S.FAILED):
        for target in S:
            with pytest.raises(IllegalReplicaTransition, match="not a legal transition"):
                check_transition("r", terminal, target)
    with pytest.raises(IllegalReplicaTransition):
        replica("r", S.READY).moved(S.PENDING, "no", NOW)


def test_a_new_request_gets_pending_replicas_that_meet_its_target() -> None:
    decision = run([request(5000)], [])
    assert decision.creates and all(r.state is S.PENDING for r in decision.creates)
    assert sum(r.predicted_output_tokens_per_second for r in decision.creates) >= 5000
    assert {r.cluster for r in decision.creates} <= {"c1", "c2"}
    assert decision.statuses["cr-1"].phase is Phase.PLACING
    again = run([request(5000)], decision.creates)
    assert not again.creates, "a pass with the replicas already persisted plans nothing new"


def test_nodes_without_a_ray_node_or_executor_are_not_used() -> None:
    decision = run([request(5000)], [], ray_nodes={"c1": frozenset()}, seen={"c1": {}})
    assert not decision.creates
    status = decision.statuses["cr-1"]
    assert status.phase is Phase.UNSATISFIABLE and status.conditions[0].reason == "FleetFull"
    assert "no Ray node (1)" in status.conditions[0].message
    assert "no executor for cluster c2 (1)" in status.conditions[0].message


def test_starting_becomes_ready_with_the_actor_endpoint() -> None:
    rec = replica("r1", S.STARTING, tps=6000)
    seen = {"c1": {"r1": Seen("ready", actor_id="a1", endpoint="http://127.0.0.1:9")}, "c2": {}}
    decision = run([request(5000)], [rec], seen)
    (moved,) = decision.updates
    assert (moved.state, moved.actor_id, moved.endpoint) == (S.READY, "a1", "http://127.0.0.1:9")
    assert decision.statuses["cr-1"].phase is Phase.READY
    assert decision.statuses["cr-1"].ready_output_tokens_per_second == 6000


@pytest.mark.parametrize(
    ("state", "seen", "age_s", "expected", "reason"),
    [
        (S.STARTING, Seen("failed", message="boom"), 1, S.FAILED, "boom"),
        (S.STARTING, None, 11, S.FAILED, "actor not found"),
        (S.STARTING, None, 5, S.STARTING, ""),  # within the grace: the name may not be registered yet
        (S.STARTING, Seen("starting"), 61, S.FAILED, "not ready within"),
        (S.READY, None, 1, S.FAILED, "actor gone"),
        (S.READY, Seen("failed", message="RayActorError"), 1, S.FAILED, "RayActorError"),
        (S.DRAINING, None, 1, S.STOPPED, "stopped"),
        (S.PENDING, None, 61, S.FAILED, "did not take the start"),
    ],
)
def test_observations_move_replicas(
    state: ReplicaState, seen: Seen | None, age_s: float, expected: ReplicaState, reason: str
) -> None:
    rec = replica("r1", state, age_s=age_s, tps=6000)
    observed = {"c1": {"r1": seen} if seen else {}, "c2": {}}
    decision = run([request(5000)], [rec], observed)
    moved = next((u for u in decision.updates if u.id == "r1"), rec)
    assert moved.state is expected
    assert reason in moved.reason


def test_an_unreachable_executor_proves_nothing() -> None:
    rec = replica("r1", S.READY, tps=6000)
    decision = run([request(5000)], [rec], seen={"c2": {}}, ray_nodes={"c2": frozenset({"br-0"})})
    assert not decision.updates, "no answer from c1 must not fail its replicas"
    assert not decision.creates, "nor replace them"


def test_cancel_drains_running_and_stops_pending() -> None:
    running, pending = replica("r1", S.READY), replica("r2", S.PENDING, devices=(1,))
    seen = {"c1": {"r1": Seen("ready")}, "c2": {}}
    decision = run([request(5000, active=False)], [running, pending], seen)
    states = {u.id: u.state for u in decision.updates}
    assert states == {"r1": S.DRAINING, "r2": S.STOPPED}
    assert [r.id for r in decision.stops] == ["r1"]
    assert decision.statuses["cr-1"].phase is Phase.CANCELLED
    assert not decision.creates


def test_a_lowered_target_drains_the_surplus_only() -> None:
    reps = [replica(f"r{i}", S.READY, tps=3000, devices=(i,)) for i in range(2)]
    seen = {"c1": {r.id: Seen("ready") for r in reps}, "c2": {}}
    decision = run([request(2500)], reps, seen)
    assert [u.state for u in decision.updates] == [S.DRAINING]
    assert "surplus" in decision.updates[0].reason
    kept = run([request(5000)], reps, seen)
    assert not kept.updates, "both are needed for 5000"


def test_orphan_actors_are_stopped() -> None:
    seen = {"c1": {"ghost": Seen("ready")}, "c2": {}}
    decision = run([], [], seen)
    assert decision.orphans == [("c1", "ghost")]


def test_failures_back_off_exponentially() -> None:
    failed = [replica(f"f{i}", S.FAILED, age_s=1) for i in range(3)]
    decision = run([request(5000)], failed)
    assert not decision.creates
    status = decision.statuses["cr-1"]
    assert status.conditions[0].reason == "CrashLoopBackOff"
    old = [replica(f"f{i}", S.FAILED, age_s=3600) for i in range(3)]
    assert run([request(5000)], old).creates, "failures outside the window are forgiven"


def test_an_unsatisfiable_request_says_why() -> None:
    decision = run([request(5000, max_price_per_million_output_tokens=0.0001)], [])
    status = decision.statuses["cr-1"]
    assert status.phase is Phase.UNSATISFIABLE
    assert status.conditions[0].reason == "PriceCapBelowCheapestOption"


def test_nothing_changes_twice() -> None:
    rec = replica("r1", S.READY, tps=6000)
    seen = {"c1": {"r1": Seen("ready")}, "c2": {}}
    first = run([request(5000)], [rec], seen)
    settled = request(5000).model_copy(update={"status": first.statuses["cr-1"]})
    assert run([settled], [rec], seen).empty


def test_launch_pins_devices_and_asks_ray_for_the_vendor_resource() -> None:
    rec = replica("r1", S.PENDING, devices=(3, 5)).model_copy(
        update={"vendor": Vendor.ASCEND, "accelerator": "910B3"}
    )
    launch = build_launch(rec, CATALOG, EngineSettings())
    assert dict(launch.resources) == {"NPU": 2.0}
    env = launch_env(launch)  # the executor derives the environment; none travels on the wire
    assert env["ASCEND_RT_VISIBLE_DEVICES"] == "3,5"
    assert env["RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"] == "1"
    assert launch.WhichOneof("kind") == "simulated" and launch.tensor_parallel == 2
    real = rec.model_copy(update={"engine": "vllm-ascend"})
    argv = list(
        expand_process(build_launch(real, CATALOG, EngineSettings(mode="real")), EngineConfig(CATALOG)).argv
    )
    assert argv[:2] == ["vllm", "serve"] and "--tensor-parallel-size" in argv
    assert argv[argv.index("--port") + 1] == "18003"  # base port + first device
    biren = rec.model_copy(update={"vendor": Vendor.BIREN, "accelerator": "BR104"})
    assert dict(build_launch(biren, CATALOG, EngineSettings()).resources) == {"biren_gpu": 2.0}
    assert launch_env(build_launch(biren, CATALOG, EngineSettings()))["SUPA_VISIBLE_DEVICES"] == "3,5"


def test_no_new_replica_is_redundant() -> None:
    decision = run([request(8000)], [])
    total = sum(r.predicted_output_tokens_per_second for r in decision.creates)
    assert total >= 8000
    for replica_ in decision.creates:
        assert total - replica_.predicted_output_tokens_per_second < 8000, f"{replica_.id} is not needed"


def test_calibration_changes_how_many_replicas_are_planned() -> None:
    baseline = run([request(5000)], [])
    slow = ReconcileConfig(
        start_timeout_s=60, actor_grace_s=10,
        scheduler=SchedulerConfig(calibration={("qwen2.5-7b-instruct", "BR104"): 0.5, ("qwen2.5-7b-instruct", "H100"): 0.5}),
    )  # fmt: skip
    slower = run([request(5000)], [], cfg=slow)
    assert sum(r.predicted_output_tokens_per_second for r in slower.creates) >= 5000
    assert len(slower.creates) > len(baseline.creates)
    assert {r.calibration_factor for r in slower.creates} == {0.5}


def sample_world(seen: Seen, tpot_target_ms: float = 50) -> World:
    rec = replica("r1", S.READY, tps=6000).model_copy(update={"calibration_factor": 1.5})
    req = request(5000).model_copy(
        update={
            "spec": request(5000).spec.model_copy(
                update={"latency": LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=tpot_target_ms)}
            )
        }
    )
    return World(NOW, [req], [rec], fleet(), {"c1": {"r1": seen}}, {"c1": frozenset({"h100-0"})})


@pytest.mark.parametrize(
    ("seen", "saturated"),
    [
        (Seen("ready", output_tokens_per_second=3000, waiting=3, tpot_p95_s=0.040), True),
        (Seen("ready", output_tokens_per_second=3000, kv_cache_usage=0.9, tpot_p95_s=0.040), True),
        (
            Seen("ready", output_tokens_per_second=900, waiting=0, kv_cache_usage=0.1, tpot_p95_s=0.020),
            False,
        ),  # idle
        (Seen("ready", output_tokens_per_second=9000, waiting=40, tpot_p95_s=0.120), False),  # past the SLO
        (Seen("ready", output_tokens_per_second=3000, waiting=3, tpot_p95_s=0.0), False),  # nothing finished
        (  # a request arriving at the scrape of a lightly loaded replica is not a queue
            Seen("ready", output_tokens_per_second=600, waiting=1, running=16, tpot_p95_s=0.040),
            False,
        ),
        (Seen("ready", output_tokens_per_second=3000, waiting=2, running=60, tpot_p95_s=0.040), False),
        (Seen("ready", output_tokens_per_second=3000, waiting=20, running=60, tpot_p95_s=0.040), True),
    ],
)
def test_only_busy_replicas_within_the_slo_calibrate(seen: Seen, saturated: bool) -> None:
    (sample,) = calibration_samples(sample_world(seen))
    assert sample.saturated is saturated
    assert sample.predicted_tps == pytest.approx(4000)  # 6000 included a factor of 1.5
    calibration = Calibration(alpha=1.0)
    factor = calibration.observe("m", "a", predicted_tps=sample.predicted_tps, observed_tps=sample.observed_tps,
                                 saturated=sample.saturated)  # fmt: skip
    assert factor == (pytest.approx(0.75) if saturated else 1.0)


def test_a_replica_lost_after_a_long_run_is_not_a_crash_loop() -> None:
    long_lived = [
        replica(f"f{i}", S.FAILED).model_copy(update={"created_at": NOW - timedelta(hours=5)})
        for i in range(3)
    ]
    assert run([request(5000)], long_lived).creates, "losing old replicas is replaced at once"


def test_terminal_records_expire_after_the_history_window() -> None:
    old, fresh = replica("old", S.STOPPED, age_s=7200), replica("new", S.FAILED, age_s=60)
    decision = run([request(5000)], [old, fresh], cfg=ReconcileConfig(history_s=3600))
    assert [r.id for r in decision.expired] == ["old"]
