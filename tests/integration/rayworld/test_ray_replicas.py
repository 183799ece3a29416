"""Replicas as real Ray actors: two local Ray clusters, one executor process each, four agent
processes whose raylets carry the simulated accelerators, and the control plane reconciling.

The Ray world (``ray_world``, this package's conftest) is shared by every test of the package;
every test gets a fresh keyspace, and actors a previous test left behind are stopped by
the next reconciler as orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
from typing import Any

import grpc
import pytest

from controlplane.embedded.etcd import EtcdProcess, free_port
from controlplane.embedded.loadgen import DemandShape, LoadGenerator
from controlplane.executor import httpio
from controlplane.gateway import Gateway, GatewayConfig
from tests.integration.conftest import ControlPlaneFactory, wait_for
from tests.integration.rayworld.conftest import RAY_NODES, RayWorld, ray_joined
from tokenfab.v1 import (
    autoscaler_pb2,
    autoscaler_pb2_grpc,
    capacity_pb2,
    capacity_pb2_grpc,
    executor_pb2,
    executor_pb2_grpc,
)

NODES = RAY_NODES
TOKEN = (("authorization", "Bearer ray-token"),)
pytestmark = pytest.mark.timeout(300)


def spec(target: float, model: str = "qwen2.5-7b-instruct") -> capacity_pb2.CapacitySpec:
    return capacity_pb2.CapacitySpec(
        model=model, output_tokens_per_second=target,
        latency=capacity_pb2.LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=50),
    )  # fmt: skip


async def wait_ready(
    stub: capacity_pb2_grpc.CapacityServiceStub, request_id: str, timeout: float = 120
) -> Any:
    got = None

    async def ready() -> bool:
        nonlocal got
        with contextlib.suppress(grpc.aio.AioRpcError):
            got = await stub.Get(capacity_pb2.GetCapacityRequest(id=request_id), metadata=TOKEN, timeout=5)
        return got is not None and got.status.phase == "Ready"

    await wait_for(ready, timeout=timeout, interval=0.3, what=f"{request_id} Ready", detail=lambda: got)
    return got


async def actors(world: RayWorld) -> dict[str, executor_pb2.ReplicaObservation]:
    seen = {}
    for client in world.executors.values():
        for observation in await client.observe():
            seen[observation.replica_id] = observation
    return seen


async def start_plane(ray_world: RayWorld, control_plane: ControlPlaneFactory, **extra: Any) -> Any:
    """A control plane on the Ray world's address and executors, once all four nodes are Ready."""
    settings: dict[str, Any] = {
        "reconcile_interval_s": 0.3, "sim_start_delay_s": 0.5, "heartbeat_interval_s": 0.5, "lost_after_s": 10,
    }  # fmt: skip
    plane = await control_plane(  # plaintext loopback: Ray is the subject here (test_authz.py: who may call)
        secure=False, port=int(ray_world.address.rpartition(":")[2]), tenants_file=ray_world.tenants,
        executors={c: e.address for c, e in ray_world.executors.items()}, **(settings | extra),
    )  # fmt: skip
    assert plane.registry is not None
    registry = plane.registry
    await wait_for(
        lambda: sum(v.state.value == "ready" for v in registry.nodes()) == 4, timeout=60, what="4 nodes"
    )
    return plane


async def cancel_and_wait_gone(
    stub: capacity_pb2_grpc.CapacityServiceStub, ray_world: RayWorld, request_id: str, ids: set[str]
) -> None:
    await stub.Cancel(capacity_pb2.CancelCapacityRequest(id=request_id), metadata=TOKEN)

    async def gone() -> bool:
        return not ids & set(await actors(ray_world))

    await wait_for(gone, timeout=60, interval=0.5, what="the cancelled replicas' actors stopped")


async def test_one_request_is_served_from_two_ray_clusters(
    ray_world: RayWorld, control_plane: ControlPlaneFactory
) -> None:
    plane = await start_plane(ray_world, control_plane)
    async with grpc.aio.insecure_channel(plane.config.address) as channel:
        stub = capacity_pb2_grpc.CapacityServiceStub(channel)
        # the leases of the small fleet have ended (sim epoch 2026-01-01): the owned H100 (cluster
        # test-a) and BR104 (test-b) nodes give about 17,500 tokens/s together
        created = await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec(15000)), metadata=TOKEN)
        got = await wait_ready(stub, created.id)
        assert got.status.ready_output_tokens_per_second >= 15000
        listed = (
            await stub.ListReplicas(capacity_pb2.ListReplicasRequest(request_id=created.id), metadata=TOKEN)
        ).replicas
        assert {r.cluster for r in listed} == {"test-a", "test-b"}, [(r.id, r.cluster) for r in listed]
        assert all(r.state == "Ready" and r.actor_id and r.endpoint for r in listed)

        running = await actors(ray_world)
        for replica in listed:
            observed = running[replica.id]
            assert observed.state == "ready" and observed.actor_id == replica.actor_id
            variable = {"nvidia": "CUDA_VISIBLE_DEVICES", "ascend": "ASCEND_RT_VISIBLE_DEVICES",
                        "biren": "SUPA_VISIBLE_DEVICES", "metax": "CUDA_VISIBLE_DEVICES"}[replica.vendor]  # fmt: skip
            assert observed.env[variable] == ",".join(str(d) for d in replica.devices), (
                replica.id,
                observed.env,
            )

        # the engine really serves: a completion through the replica's OpenAI-compatible endpoint
        answer = await httpio.request(
            "POST", listed[0].endpoint + "/v1/completions", {"prompt": [1] * 100, "max_tokens": 20}
        )
        assert answer.status == 200 and answer.decode()["usage"]["completion_tokens"] == 20
        bad = await httpio.request("POST", listed[0].endpoint + "/v1/completions", {"prompt": 5})
        assert bad.status == 400 and "prompt" in bad.decode()["error"]["message"]

        await cancel_and_wait_gone(stub, ray_world, created.id, {r.id for r in listed})
        left = await stub.ListReplicas(
            capacity_pb2.ListReplicasRequest(request_id=created.id, include_stopped=True), metadata=TOKEN
        )
        assert {r.state for r in left.replicas} == {"Stopped"}


class ControlPlaneProcess:
    """``tokenfab controlplane`` as a child process, so a test can kill -9 it."""

    def __init__(self, world: RayWorld, etcd: EtcdProcess) -> None:
        self.world, self.etcd = world, etcd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "controlplane.cli.main", "controlplane", "--address", self.world.address,
            "--etcd", self.etcd.endpoint, "--tenants", str(self.world.tenants), "--reconcile-interval", "0.3",
            "--sim-start-delay", "0.5", "--heartbeat-interval", "0.5", "--lost-after", "10",
            "--insecure-local-admin",  # plaintext loopback: the agents are the local admin
        ]  # fmt: skip
        for cluster, executor in self.world.executors.items():
            argv += ["--executor", f"{cluster}={executor.address}"]
        with (self.world.logs / "controlplane.log").open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


async def test_a_killed_control_plane_adopts_running_actors(ray_world: RayWorld, etcd: EtcdProcess) -> None:
    plane = ControlPlaneProcess(ray_world, etcd)
    plane.start()
    try:
        async with grpc.aio.insecure_channel(ray_world.address) as channel:
            stub = capacity_pb2_grpc.CapacityServiceStub(channel)
            created: Any = None

            async def created_and_ready() -> bool:  # the child control plane is still starting
                nonlocal created
                try:
                    created = await stub.Create(
                        capacity_pb2.CreateCapacityRequest(spec=spec(8000), idempotency_key="adopt"),
                        metadata=TOKEN, timeout=5,
                    )  # fmt: skip
                    await wait_ready(stub, created.id)
                except grpc.aio.AioRpcError:
                    return False
                return True

            await wait_for(created_and_ready, timeout=60, interval=0.5, what="the control plane up")
            # Live replicas only, once they are all Ready: nodes register one by one, so the
            # first plan can be partial and a later pass may drain a surplus replica that was
            # still starting; that replica is not what this test is about.
            list_request = capacity_pb2.ListReplicasRequest(request_id=created.id)
            live: Any = []

            async def settled() -> bool:
                nonlocal live
                live = (await stub.ListReplicas(list_request, metadata=TOKEN)).replicas
                return bool(live) and {r.state for r in live} == {"Ready"}

            await wait_for(
                settled,
                timeout=60,
                interval=0.3,
                what="replicas all Ready",
                detail=lambda: [r.state for r in live],
            )
            before = {r.id: r.actor_id for r in live}
            assert before and all(before.values())
            plane.kill()
            alive = await actors(ray_world)
            assert {k: alive[k].actor_id for k in before} == before, (
                "killing the control plane touched actors"
            )

            plane.start()
            # deliberately fixed: several reconcile passes at 0.3 s must NOT replace or restart anything
            await asyncio.sleep(3.0)
            after = await wait_ready(stub, created.id, timeout=60)
            replicas = (await stub.ListReplicas(list_request, metadata=TOKEN)).replicas
            assert {r.id: r.actor_id for r in replicas} == before, "replicas were replaced or restarted"
            assert {r.state for r in replicas} == {"Ready"}
            assert after.status.ready_output_tokens_per_second >= 8000
            alive = await actors(ray_world)
            assert {k: alive[k].actor_id for k in before} == before
            await stub.Cancel(capacity_pb2.CancelCapacityRequest(id=created.id), metadata=TOKEN)
    finally:
        plane.kill()


async def test_demand_scales_a_request_up_and_the_decision_is_explained(
    ray_world: RayWorld, control_plane: ControlPlaneFactory, etcd: EtcdProcess
) -> None:
    """Real load on a real engine actor, sent through the gateway: the autoscaler in the reconcile
    loop sees the demand in the engines' metrics (and the gateway's), raises the target, the
    scheduler places another replica, and the decision is in the history with its reason."""
    plane = await start_plane(ray_world, control_plane, autoscale_interval_s=1.0, autoscale_down_delay_s=3600)
    async with grpc.aio.insecure_channel(plane.config.address) as channel:
        stub = capacity_pb2_grpc.CapacityServiceStub(channel)
        scaler = autoscaler_pb2_grpc.AutoscalerServiceStub(channel)
        # one BR104 replica (about 3,000 tokens/s at this SLO) reserved; the node holds two
        autoscaled = spec(1000)
        autoscaled.allowed_accelerators.append("BR104")
        autoscaled.mean_input_tokens, autoscaled.mean_output_tokens = 600, 160
        autoscaled.autoscaling.CopyFrom(
            capacity_pb2.AutoscalingSpec(enabled=True, max_output_tokens_per_second=8000)
        )
        created = await stub.Create(capacity_pb2.CreateCapacityRequest(spec=autoscaled), metadata=TOKEN)
        await wait_ready(stub, created.id)
        query = capacity_pb2.ListReplicasRequest(request_id=created.id)
        gateway = Gateway(
            GatewayConfig(
                listen=f"127.0.0.1:{free_port()}", tenants_file=ray_world.tenants, etcd_endpoint=etcd.endpoint
            )
        )
        await gateway.start()
        # offered: about the replica's whole capacity at the SLO, more than its 80% target
        load = LoadGenerator(
            gateway.base_url, "ray-token", autoscaled.model, DemandShape(low=3000, high=3000, burst_factor=1.0),
            mean_input_tokens=600,
        )  # fmt: skip
        stop = asyncio.Event()
        running = asyncio.create_task(load.run(stop))
        try:

            async def applied_ups() -> list[Any]:
                listed = await scaler.ListDecisions(
                    autoscaler_pb2.ListDecisionsRequest(request_id=created.id, action="scale_up")
                )
                return [d for d in listed.decisions if d.applied]

            ups: list[Any] = await wait_for(
                applied_ups, timeout=120, interval=0.5, what="a scale-up decision under load"
            )

            async def two_replicas() -> bool:
                return len((await stub.ListReplicas(query, metadata=TOKEN)).replicas) >= 2

            await wait_for(
                two_replicas, timeout=120, interval=0.3, what="the raised target placing a replica"
            )
        finally:
            stop.set()
            await running
            await gateway.stop()
        up = ups[-1]
        assert up.desired_replicas > up.current_replicas >= 1 and "replicas" in up.reason
        assert up.target_output_tokens_per_second > 1000 and up.demand_output_tokens_per_second > 0
        assert up.inputs["reporting"] >= 1 and load.completed > 0
        got = await stub.Get(capacity_pb2.GetCapacityRequest(id=created.id), metadata=TOKEN)
        assert got.status.target_output_tokens_per_second == pytest.approx(
            up.target_output_tokens_per_second, abs=1
        )
        status = await scaler.GetStatus(autoscaler_pb2.GetAutoscalerStatusRequest(request_id=created.id))
        assert status.requests[0].replicas >= 2 and status.requests[0].last_decision.request_id == created.id

        ids = {r.id for r in (await stub.ListReplicas(query, metadata=TOKEN)).replicas}
        await cancel_and_wait_gone(stub, ray_world, created.id, ids)


async def ready_tps(stub: capacity_pb2_grpc.CapacityServiceStub, request_id: str) -> float:
    got = await stub.Get(capacity_pb2.GetCapacityRequest(id=request_id), metadata=TOKEN, timeout=5)
    return float(got.status.ready_output_tokens_per_second)


async def live_replicas(stub: capacity_pb2_grpc.CapacityServiceStub, request_id: str) -> list[Any]:
    query = capacity_pb2.ListReplicasRequest(request_id=request_id)
    return list((await stub.ListReplicas(query, metadata=TOKEN, timeout=5)).replicas)


async def tokenfab_cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "controlplane.cli.main", *args]
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)


async def test_drain_is_make_before_break_and_a_stopped_agent_is_replaced(
    ray_world: RayWorld, control_plane: ControlPlaneFactory
) -> None:
    """Planned: `tokenfab drain` moves the replicas off a node with no capacity gap (the Ready
    tokens/s never drop below the target). Unplanned: stopping a node's agent (and with it its
    raylet) gets its replica replaced within seconds. `tokenfab events` tells both stories."""
    plane = await start_plane(ray_world, control_plane, lost_after_s=3)
    address = ["--address", plane.config.address]
    async with grpc.aio.insecure_channel(plane.config.address) as channel:
        stub = capacity_pb2_grpc.CapacityServiceStub(channel)
        # the cheapest plan for 5,000 tokens/s is two BR104 replicas on t-biren-0
        created = await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec(5000)), metadata=TOKEN)
        await wait_ready(stub, created.id)
        before = await live_replicas(stub, created.id)
        assert {r.node_id for r in before} == {"t-biren-0"}, [(r.id, r.node_id) for r in before]

        drained = await tokenfab_cli("drain", "t-biren-0", "--reason", "test", *address)
        assert drained.returncode == 0, drained.stderr
        lowest = await ready_tps(stub, created.id)
        now_live: list[Any] = []

        async def moved() -> bool:  # and watch the gap while the replicas move
            nonlocal lowest, now_live
            lowest = min(lowest, await ready_tps(stub, created.id))
            now_live = [r for r in await live_replicas(stub, created.id) if r.state != "Draining"]
            return bool(now_live) and {(r.node_id, r.state) for r in now_live} == {("t-nvidia-0", "Ready")}

        await wait_for(
            moved, timeout=90, interval=0.1, what="the replicas moved to t-nvidia-0 and Ready",
            detail=lambda: [(r.id, r.node_id, r.state) for r in now_live],
        )  # fmt: skip
        assert lowest >= 5000, f"capacity gap: Ready tokens/s fell to {lowest}"

        # unplanned: the H100 node's agent (and its raylet) stops; t-biren-0 may take work again
        await tokenfab_cli("uncordon", "t-biren-0", *address)
        moved_ids = {r.id for r in now_live}
        ray_world.agents["t-nvidia-0"].stop()
        try:

            async def replaced() -> list[Any]:
                return [r for r in await live_replicas(stub, created.id) if r.id not in moved_ids]

            replacements = await wait_for(
                replaced, timeout=60, interval=0.1, what="a replacement for the stopped node's replica"
            )
            assert {r.node_id for r in replacements} == {"t-biren-0"}
            await wait_ready(stub, created.id, timeout=60)
        finally:
            ray_world.agents["t-nvidia-0"].start()

        story = await tokenfab_cli("events", "-o", "json", "--request", created.id, *address)
        assert story.returncode == 0, story.stderr
        kinds = [e["kind"] for e in json.loads(story.stdout)]
        assert "replacement_started" in kinds and "replica_retired" in kinds, kinds
        assert kinds.index("replacement_started") < kinds.index("replica_retired")
        assert {"replica_lost", "replica_failed"} & set(kinds), kinds
        nodes = json.loads(
            (await tokenfab_cli("events", "-o", "json", "--node", "t-biren-0", *address)).stdout
        )
        assert "drain" in [e["kind"] for e in nodes]

        ids = {r.id for r in await live_replicas(stub, created.id)}
        await cancel_and_wait_gone(stub, ray_world, created.id, ids)
    # the restarted agent's raylet is back before the next test
    rejoined = functools.partial(ray_joined, ray_world.executors["test-a"], {"t-nvidia-0"})
    await wait_for(rejoined, timeout=90, interval=0.5, what="t-nvidia-0's raylet rejoining")


def replica_pids(replica_id: str) -> list[int]:
    """Processes on this machine carrying the replica's identity (its actor worker, its engine)."""
    from agents.fence import replica_processes

    pids = []
    for node in NODES:
        pids += [p.pid for p in replica_processes(node) if p.replica_id == replica_id]
    return pids


async def test_a_partitioned_node_is_replaced_and_fenced(
    ray_world: RayWorld, control_plane: ControlPlaneFactory
) -> None:
    """Freeze a node's agent (SIGSTOP: the control plane hears nothing, its raylet and actors run
    on). The node goes Lost, its replicas fail and are replaced elsewhere, and the old ones stop:
    none of them runs anywhere once the node is back, and the request has no duplicates."""
    plane = await start_plane(ray_world, control_plane, lost_after_s=3)
    async with grpc.aio.insecure_channel(plane.config.address) as channel:
        stub = capacity_pb2_grpc.CapacityServiceStub(channel)
        created = await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec(5000)), metadata=TOKEN)
        await wait_ready(stub, created.id)
        before = await live_replicas(stub, created.id)
        (node,) = {r.node_id for r in before}
        old = {r.id for r in before}
        assert all(replica_pids(r) for r in old), "every replica runs in a process of its own"

        agent = ray_world.agents[node]
        agent.signal(signal.SIGSTOP)
        try:
            now_live: list[Any] = []
            fresh: list[Any] = []

            async def replaced() -> bool:
                nonlocal now_live, fresh
                now_live = await live_replicas(stub, created.id)
                fresh = [r for r in now_live if r.id not in old]
                return (
                    bool(fresh)
                    and all(r.state == "Ready" for r in fresh)
                    and not old & {r.id for r in now_live}
                )

            await wait_for(
                replaced, timeout=60, interval=0.2, what="Ready replacements and no old replica",
                detail=lambda: [(r.id, r.node_id, r.state) for r in now_live],
            )  # fmt: skip
            assert node not in {r.node_id for r in fresh}
            # the partitioned replicas are fenced: their actors and processes are gone

            async def fenced() -> bool:
                return not old & set(await actors(ray_world)) and not any(replica_pids(r) for r in old)

            await wait_for(fenced, timeout=30, interval=0.2, what="no replaced replica running")
        finally:
            agent.signal(signal.SIGCONT)
        assert plane.registry is not None
        registry = plane.registry
        await wait_for(lambda: registry.get(node).state.value == "ready", timeout=30, what=f"{node} back")
        await wait_ready(stub, created.id)
        after = await live_replicas(stub, created.id)
        assert not old & {r.id for r in after} and not any(replica_pids(r) for r in old)
        tps = [r.predicted_output_tokens_per_second for r in after]
        assert sum(tps) - min(tps) < 5000, f"a surplus (duplicate) replica survived: {tps}"
        await cancel_and_wait_gone(stub, ray_world, created.id, {r.id for r in after})


async def test_executor_refuses_bad_commands(ray_world: RayWorld) -> None:
    async with grpc.aio.insecure_channel(ray_world.executors["test-a"].address) as channel:
        stub = executor_pb2_grpc.ExecutorServiceStub(channel)
        bad_starts = [
            executor_pb2.ReplicaLaunch(node_id="t-nvidia-0", simulated=executor_pb2.SimulatedEngine()),
            executor_pb2.ReplicaLaunch(replica_id="x", simulated=executor_pb2.SimulatedEngine()),
            executor_pb2.ReplicaLaunch(replica_id="x", node_id="t-nvidia-0"),  # no engine
        ]
        for launch in bad_starts:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.StartReplica(executor_pb2.StartReplicaRequest(launch=launch))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (info.value.details() or "").startswith("launch."), info.value.details()
        for request, field in (
            (executor_pb2.StopReplicaRequest(), "replica_id"),
            (executor_pb2.StopReplicaRequest(replica_id="x", drain_s=-1), "drain_s"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.StopReplica(request)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (info.value.details() or "").startswith(field)
        gone = await stub.StopReplica(executor_pb2.StopReplicaRequest(replica_id="never-existed"))
        assert gone.existed is False  # stopping is idempotent
        assert "never-existed" not in {
            o.replica_id for o in (await stub.Observe(executor_pb2.ObserveRequest())).replicas
        }
