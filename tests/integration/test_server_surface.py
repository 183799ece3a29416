"""gRPC health checking and reflection (what grpcurl and Kubernetes probes use), the
Prometheus endpoint, and commands pushed down the Connect stream to a live agent."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agents.discovery.simulated import SimulatedBackend, load_fleet
from agents.runtime import Agent, NodeIdentity
from controlplane.embedded.etcd import free_port
from controlplane.security import Kind
from tests.integration.conftest import SMALL_FLEET, ControlPlaneFactory, Deployment, dial, state_of, wait_for
from tokenfab.v1 import fleet_pb2, fleet_pb2_grpc, types_pb2


async def test_health_and_reflection(control_plane: ControlPlaneFactory) -> None:
    plane = await control_plane()
    async with dial(plane, "anonymous") as channel:  # a client certificate, no token
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tokenfab.v1.AgentService", "tokenfab.v1.FleetService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        names = {s.name for s in reply.list_services_response.service}
        call.cancel()
    assert {"tokenfab.v1.AgentService", "tokenfab.v1.FleetService", "grpc.health.v1.Health"} <= names


async def test_commands_reach_the_agent_and_watch_sees_changes(
    control_plane: ControlPlaneFactory, deployment: Deployment
) -> None:
    metrics_port = free_port()
    plane = await control_plane(metrics_address=f"127.0.0.1:{metrics_port}")
    node = next(n for n in load_fleet(SMALL_FLEET) if n.node_id == "t-ascend-0")
    agent = Agent(
        SimulatedBackend(node), NodeIdentity(node.node_id, node.cluster), address=plane.config.address,
        tls=deployment.tls(Kind.NODE, node.node_id),
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await wait_for(lambda: state_of(plane, "t-ascend-0") == "ready", what="ready")
        async with dial(plane) as channel:
            fleet = fleet_pb2_grpc.FleetServiceStub(channel)
            watch = fleet.WatchNodes(fleet_pb2.WatchNodesRequest())
            first = await watch.read()
            assert first.kind == fleet_pb2.NODE_EVENT_KIND_SNAPSHOT
            assert first.node.node_id == "t-ascend-0"
            node_pb = await fleet.Cordon(
                fleet_pb2.CordonRequest(node_id="t-ascend-0", reason="test"), timeout=5
            )
            assert node_pb.state == types_pb2.NODE_STATE_CORDONED
            change = await asyncio.wait_for(watch.read(), 5)
            assert change.kind == fleet_pb2.NODE_EVENT_KIND_UPSERT
            assert change.node.state == types_pb2.NODE_STATE_CORDONED
            await wait_for(lambda: agent.status.cordoned, timeout=5, what="cordon command at the agent")
            await fleet.Uncordon(fleet_pb2.UncordonRequest(node_id="t-ascend-0"), timeout=5)
            await wait_for(
                lambda: not agent.status.cordoned and agent.status.state == "ready", what="uncordon"
            )
            watch.cancel()
        body = await asyncio.to_thread(
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            )
        )
        assert 'tokenfab_nodes{state="ready",vendor="ascend"} 1.0' in body
        assert "tokenfab_heartbeat_processing_seconds_count" in body
        assert 'tokenfab_node_transitions_total{from_state="ready",to_state="cordoned"} 1.0' in body
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
