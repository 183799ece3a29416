"""A three-member etcd cluster on loopback with one member killed (the raft leader, and the member
the clients talk to): the store moves to another member and the control plane (election, fleet,
API) carries on."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aetcd
import grpc
import pytest
from aetcd import rpc

from controlplane.api.server import ControlPlane
from controlplane.config import ControlPlaneConfig
from controlplane.embedded.etcd import EtcdCluster, EtcdProcess, free_port
from controlplane.metrics import ControlPlaneMetrics
from controlplane.store.etcd import EtcdStore
from tests.integration.conftest import FAST, AgentProcess, metric_value, state_of, wait_for
from tokenfab.v1 import fleet_pb2, fleet_pb2_grpc


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EtcdCluster]:
    members = EtcdCluster(tmp_path / "etcd", 3)
    await members.start()
    yield members
    members.stop()


async def make_raft_leader(cluster: EtcdCluster, member: EtcdProcess) -> None:
    """Move raft leadership to ``member`` (MoveLeader, sent to the current leader), so that the
    test kills the member its client talks to *and* the raft leader: the hardest single loss."""
    async with aetcd.Client(host=member.host, port=member.client_port) as client:
        (target,) = [m.id async for m in client.members() if m.name == member.name]
        leader = (await client.status()).leader
    if leader.id == target:
        return
    host, _, port = leader.client_urls[0].removeprefix("http://").rpartition(":")
    async with aetcd.Client(host=host, port=int(port)) as client:
        await client.connect()
        await client.maintenancestub.MoveLeader(rpc.MoveLeaderRequest(targetID=target), timeout=10)
    async with aetcd.Client(host=member.host, port=member.client_port) as client:
        assert (await client.status()).leader.id == target


async def test_the_store_survives_losing_the_member_it_talks_to(cluster: EtcdCluster) -> None:
    store = EtcdStore(endpoints=[(m.host, m.client_port) for m in cluster.members], timeout_s=2.0)
    await store.connect()
    try:
        first = store.endpoint
        revision = await store.put("/t/a", b"1")
        await make_raft_leader(cluster, cluster.members[0])
        cluster.members[0].kill()  # the member the store is connected to
        assert first == cluster.members[0].endpoint

        kv = await store.get("/t/a")  # moves to the next member on its own
        assert kv is not None and kv.value == b"1" and kv.mod_revision == revision
        assert store.endpoint != first and store.failovers >= 1
        moved = await store.compare_and_put("/t/a", b"2", expected_mod_revision=revision)
        assert moved is not None and moved > revision
        assert await store.compare_and_put("/t/a", b"3", expected_mod_revision=revision) is None  # stale
        items, _ = await store.list_prefix("/t/")
        assert [(i.key, i.value) for i in items] == [("/t/a", b"2")]
    finally:
        await store.close()


async def test_the_control_plane_keeps_leading_and_writing_with_one_member_down(
    cluster: EtcdCluster, agents: Callable[..., AgentProcess]
) -> None:
    config = ControlPlaneConfig(
        address=f"127.0.0.1:{free_port()}", etcd_endpoint=cluster.endpoint, leader_ttl_s=3,
        insecure_local_admin=True, **FAST,  # plaintext loopback: the agents are the local admin
    )  # fmt: skip
    plane = ControlPlane(config, metrics=ControlPlaneMetrics())
    await plane.start()
    try:
        assert plane.election is not None
        election = plane.election
        await wait_for(election.is_leader, what="leadership")
        agent = agents("t-nvidia-0", config.address)
        seen = lambda: f"state={state_of(plane, 't-nvidia-0')}\n{agent.output()}"  # noqa: E731
        await wait_for(lambda: state_of(plane, "t-nvidia-0") == "ready", what="Ready", detail=seen)

        await make_raft_leader(cluster, cluster.members[0])
        cluster.members[0].kill()  # the member every client of this instance started on

        # a write through the API lands in etcd (on a surviving member) ...
        async with grpc.aio.insecure_channel(config.address) as channel:
            stub = fleet_pb2_grpc.FleetServiceStub(channel)
            node = None
            for _ in range(20):  # the first calls after the kill may meet the failover
                with contextlib.suppress(grpc.aio.AioRpcError):
                    node = await stub.Cordon(
                        fleet_pb2.CordonRequest(node_id="t-nvidia-0", reason="t"), timeout=5
                    )
                    break
            assert node is not None and node.cordoned
        assert isinstance(plane.store, EtcdStore) and plane.store.failovers >= 1
        assert metric_value(plane.metrics.etcd_failovers) == plane.store.failovers
        assert plane.store.endpoint != cluster.members[0].endpoint
        survivor = EtcdStore(cluster.members[1].host, cluster.members[1].client_port)
        await survivor.connect()
        try:
            kv = await survivor.get("/tokenfab/v1/nodes/t-nvidia-0")
            assert kv is not None and b'"cordoned":true' in kv.value
        finally:
            await survivor.close()
        # ... the agent keeps beating (no Lost), and this instance leads again or still
        await wait_for(election.is_leader, timeout=30, what="leadership after the member loss")
        assert state_of(plane, "t-nvidia-0") in ("cordoned", "ready")
        assert agent.proc is not None and agent.proc.poll() is None
    finally:
        await plane.stop(grace_s=0.1)


async def test_a_follower_cut_off_past_a_compaction_lists_again_and_resumes(cluster: EtcdCluster) -> None:
    """Instance B follows the fleet through one member only; that member dies, the fleet changes
    (a node cordoned, one deleted, one added) and etcd compacts its history, then the member comes
    back. B's resume revision is gone: it must re-list (seeing every change) and keep following."""
    from controlplane.domain.nodes import GiB, NodeRegistration
    from controlplane.fleet.registry import NodeRegistry
    from controlplane.fleet.types import FleetTiming
    from controlplane.store import keys

    def registration(node_id: str) -> NodeRegistration:
        return NodeRegistration.model_validate(
            {"node_id": node_id, "cluster": "c1", "vendor": "ascend",
             "devices": [{"uuid": f"{node_id}-0", "index": 0, "model": "910B3", "memory_bytes": 64 * GiB}]}
        )  # fmt: skip

    m0, m1, m2 = cluster.members
    writer_store = EtcdStore(endpoints=[(m.host, m.client_port) for m in (m1, m2)], timeout_s=2.0)
    follower_store = EtcdStore(m0.host, m0.client_port, timeout_s=2.0)
    await writer_store.connect()
    await follower_store.connect()
    timing = FleetTiming(heartbeat_interval_s=1.0, suspect_after_missed=3, lost_after_s=600.0)
    a = NodeRegistry(writer_store, timing=timing, identity="a")
    b = NodeRegistry(follower_store, timing=timing, identity="b", is_leader=lambda: False)
    await a.start(monitor=False)
    await b.start()  # follows nodes and presence
    try:
        for node in ("n1", "n2"):
            await a.register(registration(node))
        await wait_for(lambda: {v.node_id for v in b.nodes()} == {"n1", "n2"}, what="B sees the fleet")

        m0.kill()
        await a.cordon("n1", "maintenance")
        n2 = await writer_store.get(keys.node("n2"))
        assert n2 is not None
        assert await writer_store.compare_and_delete(keys.node("n2"), expected_mod_revision=n2.mod_revision)
        await a.register(registration("n3"))
        _, revision = await writer_store.list_prefix(keys.NODES)
        await writer_store.compact(revision)
        await m0.start()  # rejoins, catches up (compaction included) through raft

        def caught_up() -> bool:
            views = {v.node_id: v for v in b.nodes()}
            return set(views) == {"n1", "n3"} and views["n1"].record.cordoned

        await wait_for(caught_up, timeout=60, what="B re-listed after the compaction")
        await a.register(registration("n4"))  # and B follows again from the fresh listing
        await wait_for(lambda: "n4" in {v.node_id for v in b.nodes()}, what="B follows after re-listing")
    finally:
        await b.stop()
        await a.stop()
        await follower_store.close()
        await writer_store.close()
