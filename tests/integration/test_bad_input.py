"""Bad input at the real gRPC server: the right status code, the field named, nothing stored,
and everyone else still served."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aetcd
import grpc
import pytest

from controlplane.embedded.etcd import EtcdProcess
from tests.integration.conftest import ControlPlaneFactory
from tests.integration.helpers import beat, register_request
from tokenfab.v1 import agent_pb2, agent_pb2_grpc, fleet_pb2, fleet_pb2_grpc, types_pb2


@pytest.fixture
async def stubs(
    control_plane: ControlPlaneFactory,
) -> AsyncIterator[tuple[agent_pb2_grpc.AgentServiceStub, fleet_pb2_grpc.FleetServiceStub]]:
    # validation, not authorization: the plaintext loopback instance lets this caller act for any
    # node (test_authz.py covers who may call what)
    plane = await control_plane(secure=False, max_message_bytes=256 * 1024)
    async with grpc.aio.insecure_channel(plane.config.address) as channel:
        yield agent_pb2_grpc.AgentServiceStub(channel), fleet_pb2_grpc.FleetServiceStub(channel)


async def stored_nodes(etcd: EtcdProcess) -> list[bytes]:
    async with aetcd.Client(host=etcd.host, port=etcd.client_port) as client:
        return [kv.key for kv in await client.get_prefix(b"/tokenfab/v1/nodes/")]


def bad(**over: object) -> agent_pb2.RegisterRequest:
    return register_request("bad-node", **over)


def with_device(**fields: object) -> agent_pb2.RegisterRequest:
    req = bad()
    for key, value in fields.items():
        setattr(req.devices[1], key, value)
    return req


CASES = [
    ("unknown vendor", bad(vendor=types_pb2.VENDOR_UNSPECIFIED), "vendor"),
    ("vendor out of range", bad(vendor=77), "vendor"),
    ("empty node id", register_request(""), "node_id"),
    ("absurd memory", with_device(memory_bytes=1 << 60), "devices[1].memory_bytes"),
    ("zero memory", with_device(memory_bytes=0), "devices[1].memory_bytes"),
    ("duplicate uuid", with_device(uuid="bad-node-gpu0"), "devices[1].uuid"),
    ("duplicate index", with_device(index=0), "devices[1].index"),
    ("no devices", register_request("bad-node", devices=0), "devices"),
    ("no cluster", bad(cluster=""), "cluster"),
]


@pytest.mark.parametrize(("name", "request_", "field"), CASES, ids=[c[0] for c in CASES])
async def test_bad_registration_is_rejected_and_not_stored(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, fleet_pb2_grpc.FleetServiceStub],
    etcd: EtcdProcess,
    name: str,
    request_: agent_pb2.RegisterRequest,
    field: str,
) -> None:
    agent, fleet = stubs
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await agent.Register(request_, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(f"{field}:")
    assert await stored_nodes(etcd) == []
    # the server keeps serving everyone else
    ok = await agent.Register(register_request("good-node"), timeout=5)
    assert ok.created
    listed = await fleet.ListNodes(fleet_pb2.ListNodesRequest(), timeout=5)
    assert [n.node_id for n in listed.nodes] == ["good-node"]


async def test_oversized_message_is_refused_by_grpc(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, fleet_pb2_grpc.FleetServiceStub], etcd: EtcdProcess
) -> None:
    agent, _ = stubs
    huge = register_request("big-node", labels={"blob": "x" * 300_000})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await agent.Register(huge, timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await stored_nodes(etcd) == []
    assert (await agent.Register(register_request("after-big"), timeout=5)).created


async def test_label_value_too_long_names_the_label(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, fleet_pb2_grpc.FleetServiceStub],
) -> None:
    agent, _ = stubs
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await agent.Register(register_request("n-label", labels={"team": "y" * 1000}), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("labels.team:")


async def test_heartbeat_for_unregistered_node_is_not_found(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, fleet_pb2_grpc.FleetServiceStub],
) -> None:
    agent, _ = stubs
    call = agent.Connect()
    await call.write(beat("ghost"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "ghost" in (info.value.details() or "")


async def test_stream_is_bound_to_one_node(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, fleet_pb2_grpc.FleetServiceStub],
) -> None:
    agent, _ = stubs
    for node in ("n-a", "n-b"):
        await agent.Register(register_request(node), timeout=5)
    call = agent.Connect()
    await call.write(beat("n-a"))
    ack = await call.read()
    assert ack.ack.seq == 1
    assert ack.ack.state == types_pb2.NODE_STATE_READY
    await call.write(beat("n-b", seq=2))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("heartbeat.node_id:")


async def test_bad_telemetry_names_the_device(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, fleet_pb2_grpc.FleetServiceStub],
) -> None:
    agent, _ = stubs
    await agent.Register(register_request("n-t"), timeout=5)
    call = agent.Connect()
    message = beat("n-t")
    message.heartbeat.devices[1].temperature_celsius = 1e9
    await call.write(message)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("devices[1].temperature_celsius:")


async def test_fleet_service_errors(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, fleet_pb2_grpc.FleetServiceStub],
) -> None:
    _, fleet = stubs
    for call in (
        fleet.GetNode(fleet_pb2.GetNodeRequest(node_id="nope"), timeout=5),
        fleet.Cordon(fleet_pb2.CordonRequest(node_id="nope"), timeout=5),
        fleet.Uncordon(fleet_pb2.UncordonRequest(node_id="nope"), timeout=5),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fleet.ListNodes(fleet_pb2.ListNodesRequest(vendor=99), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("vendor:")


async def test_lease_revoke_extend_and_events(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, fleet_pb2_grpc.FleetServiceStub],
) -> None:
    """Revoking and extending a lease over the real server: the new end shows on the node and
    survives the agent registering its original terms again; bad input names the field; an
    owned node has no lease to revoke; every change is an event."""
    from datetime import UTC, datetime, timedelta

    from google.protobuf.timestamp_pb2 import Timestamp

    agent, fleet = stubs
    start, end = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=12)
    lease = types_pb2.LeaseTerms(provider="cloud-x", lease_id="l-1", price_per_accelerator_hour=1.0)
    lease.start_time.FromDatetime(start)
    lease.end_time.FromDatetime(end)
    leased = register_request("leased-1")
    leased.lease.CopyFrom(lease)
    await agent.Register(leased, timeout=5)
    await agent.Register(register_request("owned-1"), timeout=5)

    revoked = await fleet.RevokeLease(
        fleet_pb2.RevokeLeaseRequest(node_id="leased-1", notice_s=60, reason="t")
    )
    new_end = revoked.lease.end_time.ToDatetime(tzinfo=UTC)
    assert abs((new_end - datetime.now(UTC)).total_seconds() - 60) < 5
    await agent.Register(leased, timeout=5)  # the agent still believes the old terms
    again = await fleet.GetNode(fleet_pb2.GetNodeRequest(node_id="leased-1"))
    assert again.lease.end_time.ToDatetime(tzinfo=UTC) == new_end

    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(days=2))
    extended = await fleet.ExtendLease(fleet_pb2.ExtendLeaseRequest(node_id="leased-1", until=later))
    assert extended.lease.end_time.seconds == later.seconds

    past = Timestamp()
    past.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    bad = [
        (fleet.RevokeLease(fleet_pb2.RevokeLeaseRequest(node_id="leased-1", notice_s=-1)), "INVALID_ARGUMENT", "notice_s"),
        (fleet.RevokeLease(fleet_pb2.RevokeLeaseRequest(node_id="leased-1", notice_s=float("nan"))),
         "INVALID_ARGUMENT", "notice_s"),
        (fleet.RevokeLease(fleet_pb2.RevokeLeaseRequest(node_id="leased-1", notice_s=9e9)), "INVALID_ARGUMENT", "notice_s"),
        (fleet.RevokeLease(fleet_pb2.RevokeLeaseRequest(node_id="owned-1", notice_s=60)), "FAILED_PRECONDITION", "node_id"),
        (fleet.RevokeLease(fleet_pb2.RevokeLeaseRequest(node_id="nope", notice_s=60)), "NOT_FOUND", ""),
        (fleet.ExtendLease(fleet_pb2.ExtendLeaseRequest(node_id="leased-1", until=past)), "INVALID_ARGUMENT", "until"),
        (fleet.ExtendLease(fleet_pb2.ExtendLeaseRequest(node_id="leased-1")), "INVALID_ARGUMENT", "until"),
        (fleet.Drain(fleet_pb2.DrainRequest(node_id="owned-1", reason="x" * 300)), "INVALID_ARGUMENT", "reason"),
        (fleet.ListEvents(fleet_pb2.ListEventsRequest(limit=5000)), "INVALID_ARGUMENT", "limit"),
    ]  # fmt: skip
    for call, code, field in bad:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code().name == code, (code, info.value.details())
        assert (info.value.details() or "").startswith(field), info.value.details()
    # nothing above changed the lease
    kept = await fleet.GetNode(fleet_pb2.GetNodeRequest(node_id="leased-1"))
    assert kept.lease.end_time.seconds == later.seconds

    await fleet.Drain(fleet_pb2.DrainRequest(node_id="owned-1", reason="disk swap"))
    events = (await fleet.ListEvents(fleet_pb2.ListEventsRequest())).events
    assert [e.kind for e in events][:3] == ["drain", "lease_extended", "lease_revoked"]  # newest first
    assert events[2].node_id == "leased-1" and "60 s notice" in events[2].message
    only = (await fleet.ListEvents(fleet_pb2.ListEventsRequest(node_id="owned-1"))).events
    assert [e.kind for e in only] == ["drain"]
