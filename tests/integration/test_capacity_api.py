"""CapacityService against the real server (real etcd, real gRPC, nodes registered over gRPC)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aetcd
import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.domain.capacity import CapacityRecord
from controlplane.embedded.etcd import EtcdProcess
from controlplane.security import Kind
from tests.integration.conftest import ControlPlaneFactory, Deployment, dial
from tokenfab.v1 import agent_pb2, agent_pb2_grpc, capacity_pb2, capacity_pb2_grpc, types_pb2

GiB = 1024**3
ALICE = (("authorization", "Bearer alice-token"),)
BOB = (("authorization", "Bearer bob-token"),)


async def ready_node(
    agent: agent_pb2_grpc.AgentServiceStub, node_id: str, vendor: int, model: str, gib: int
) -> None:
    devices = [
        types_pb2.Device(uuid=f"{node_id}-{i}", index=i, model=model, memory_bytes=gib * GiB)
        for i in range(8)
    ]
    await agent.Register(
        agent_pb2.RegisterRequest(node_id=node_id, cluster="c1", vendor=vendor, devices=devices)
    )
    call = agent.Connect()
    await call.write(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(node_id=node_id, seq=1)))
    await call.read()
    call.cancel()


@pytest.fixture
async def stub(
    control_plane: ControlPlaneFactory, tmp_path: Path, deployment: Deployment
) -> AsyncIterator[capacity_pb2_grpc.CapacityServiceStub]:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: alice, token: alice-token, max_accelerators: 4}\n"
                       "  - {name: bob, token: bob-token}\n")  # fmt: skip
    plane = await control_plane(tenants_file=tenants, heartbeat_interval_s=5.0, lost_after_s=60.0)
    for node, vendor, model, gib in (
        ("h100-a", types_pb2.VENDOR_NVIDIA, "H100", 80),
        ("br104-a", types_pb2.VENDOR_BIREN, "BR104", 32),
    ):  # each node registers as itself, with its own certificate
        async with dial(plane, "anonymous", tls=deployment.tls(Kind.NODE, node)) as node_channel:
            await ready_node(agent_pb2_grpc.AgentServiceStub(node_channel), node, vendor, model, gib)
    async with dial(plane, "anonymous") as channel:  # the tenants' tokens ride on each call
        yield capacity_pb2_grpc.CapacityServiceStub(channel)


def spec(**over: Any) -> capacity_pb2.CapacitySpec:
    fields: dict[str, Any] = {
        "model": "qwen2.5-7b-instruct",
        "output_tokens_per_second": 2000,
        "latency": capacity_pb2.LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=50),
    }
    return capacity_pb2.CapacitySpec(**(fields | over))


async def stored(etcd: EtcdProcess) -> list[bytes]:
    async with aetcd.Client(host=etcd.host, port=etcd.client_port) as client:
        return [kv.value for kv in await client.get_prefix(b"/tokenfab/v1/capacity/requests/")]


async def test_create_get_list_update_cancel(stub: capacity_pb2_grpc.CapacityServiceStub) -> None:
    created = await stub.Create(
        capacity_pb2.CreateCapacityRequest(spec=spec(), idempotency_key="k1"), metadata=BOB
    )
    assert created.id.startswith("cr-") and created.tenant == "bob"
    assert created.status.phase == "Pending"
    assert created.status.predicted_output_tokens_per_second >= 2000
    nodes = {r.node_id for r in created.status.replicas}
    assert nodes <= {"h100-a", "br104-a"} and nodes
    assert all(len(r.devices) == r.tensor_parallel for r in created.status.replicas)
    again = await stub.Create(
        capacity_pb2.CreateCapacityRequest(spec=spec(), idempotency_key="k1"), metadata=BOB
    )
    assert again.id == created.id
    got = await stub.Get(capacity_pb2.GetCapacityRequest(id=created.id), metadata=BOB)
    assert got.spec.model == "qwen2.5-7b-instruct"
    listed = await stub.List(capacity_pb2.ListCapacityRequests(), metadata=BOB)
    assert [r.id for r in listed.requests] == [created.id]
    updated = await stub.Update(
        capacity_pb2.UpdateCapacityRequest(
            id=created.id, output_tokens_per_second=4000, expected_generation=1
        ),
        metadata=BOB,
    )
    assert updated.generation == 2 and updated.spec.output_tokens_per_second == 4000
    cancelled = await stub.Cancel(capacity_pb2.CancelCapacityRequest(id=created.id), metadata=BOB)
    assert cancelled.status.phase == "Cancelled"


async def test_authentication_and_tenant_isolation(stub: capacity_pb2_grpc.CapacityServiceStub) -> None:
    for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "Basic x"),)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.List(capacity_pb2.ListCapacityRequests(), metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    mine = await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec()), metadata=BOB)
    for call in (
        stub.Get(capacity_pb2.GetCapacityRequest(id=mine.id), metadata=ALICE),
        stub.Cancel(capacity_pb2.CancelCapacityRequest(id=mine.id), metadata=ALICE),
        stub.ListReplicas(capacity_pb2.ListReplicasRequest(request_id=mine.id), metadata=ALICE),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec(tenant="bob")), metadata=ALICE)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (info.value.details() or "").startswith("spec.tenant:")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListReplicas(capacity_pb2.ListReplicasRequest(), metadata=())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListReplicas(capacity_pb2.ListReplicasRequest(request_id="a/b"), metadata=BOB)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and (info.value.details() or "").startswith(
        "id:"
    )
    # no executor on this control plane: requests are planned, no replica exists
    assert not (await stub.ListReplicas(capacity_pb2.ListReplicasRequest(), metadata=BOB)).replicas


BAD = [
    ("unknown model", spec(model="gpt-9"), "spec.model"),
    ("zero target", spec(output_tokens_per_second=0), "spec.output_tokens_per_second"),
    ("negative target", spec(output_tokens_per_second=-5), "spec.output_tokens_per_second"),
    ("unreachable TPOT", spec(latency=capacity_pb2.LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=0.5)),
     "spec.latency.tpot_p95_ms"),
    ("unknown vendor", spec(allowed_vendors=["nvidia", "intel"]), "spec.allowed_vendors[1]"),
    ("unknown accelerator", spec(denied_accelerators=["TPUv5"]), "spec.denied_accelerators[0]"),
    ("price cap zero", spec(max_price_per_million_output_tokens=0), "spec.max_price_per_million_output_tokens"),
    ("price cap negative", spec(max_price_per_million_output_tokens=-1), "spec.max_price_per_million_output_tokens"),
    ("no latency class", capacity_pb2.CapacitySpec(model="glm-4-9b", output_tokens_per_second=10), "spec.latency"),
    ("budget over 100%", spec(max_unavailable_percent=150), "spec.max_unavailable_percent"),
    ("budget NaN", spec(max_unavailable_percent=float("nan")), "spec.max_unavailable_percent"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "bad", "field"), BAD, ids=[b[0] for b in BAD])
async def test_bad_input_names_the_field_and_stores_nothing(
    stub: capacity_pb2_grpc.CapacityServiceStub,
    etcd: EtcdProcess,
    name: str,
    bad: capacity_pb2.CapacitySpec,
    field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Create(capacity_pb2.CreateCapacityRequest(spec=bad), metadata=BOB)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(f"{field}:"), info.value.details()
    assert await stored(etcd) == []


async def test_quota_is_resource_exhausted(
    stub: capacity_pb2_grpc.CapacityServiceStub, etcd: EtcdProcess
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Create(
            capacity_pb2.CreateCapacityRequest(spec=spec(output_tokens_per_second=100_000)), metadata=ALICE
        )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_accelerators 4" in (info.value.details() or "")
    assert await stored(etcd) == []


async def test_watch_streams_changes(stub: capacity_pb2_grpc.CapacityServiceStub) -> None:
    first = await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec()), metadata=BOB)
    watch = stub.Watch(capacity_pb2.WatchCapacityRequests(), metadata=BOB)
    event = await asyncio.wait_for(watch.read(), 5)
    assert event.kind == capacity_pb2.CapacityEvent.KIND_SNAPSHOT and event.request.id == first.id
    await stub.Cancel(capacity_pb2.CancelCapacityRequest(id=first.id), metadata=BOB)
    event = await asyncio.wait_for(watch.read(), 5)
    assert event.kind == capacity_pb2.CapacityEvent.KIND_UPSERT and event.request.status.phase == "Cancelled"
    watch.cancel()


ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED}  # fmt: skip
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -1.0, 1.0, 2000.0, 1e12])
)
names = st.one_of(
    st.sampled_from(["qwen2.5-7b-instruct", "glm-4-9b", "deepseek-v3", "nvidia", "H100"]),
    st.text(max_size=40),
)
specs = st.builds(
    capacity_pb2.CapacitySpec,
    model=names,
    input_tokens_per_second=floats,
    output_tokens_per_second=floats,
    latency=st.builds(capacity_pb2.LatencyClass, ttft_p95_ms=floats, tpot_p95_ms=floats),
    allowed_vendors=st.lists(names, max_size=2),
    allowed_accelerators=st.lists(names, max_size=2),
    clusters=st.lists(names, max_size=2),
    priority=st.integers(-(2**31), 2**31 - 1),
    mean_input_tokens=floats,
    mean_output_tokens=floats,
    max_unavailable_percent=floats,
    autoscaling=st.one_of(
        st.none(),
        st.builds(
            capacity_pb2.AutoscalingSpec,
            enabled=st.booleans(),
            max_output_tokens_per_second=st.one_of(st.none(), floats),
            max_spend_per_hour=st.one_of(st.none(), floats),
            scale_to_zero=st.booleans(),
            advisory=st.booleans(),
        ),
    ),
)


async def test_fuzz_create(stub: capacity_pb2_grpc.CapacityServiceStub, etcd: EtcdProcess) -> None:
    loop = asyncio.get_running_loop()
    codes: set[grpc.StatusCode] = set()

    async def one(s: capacity_pb2.CapacitySpec, key: str) -> None:
        try:
            await stub.Create(capacity_pb2.CreateCapacityRequest(spec=s, idempotency_key=key), metadata=BOB)
            codes.add(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() in ALLOWED, (exc.code(), exc.details(), s)
            codes.add(exc.code())

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(s=specs, key=st.text(max_size=300))
    def run(s: capacity_pb2.CapacitySpec, key: str) -> None:
        asyncio.run_coroutine_threadsafe(one(s, key), loop).result(timeout=30)

    await asyncio.to_thread(run)
    for raw in await stored(etcd):
        CapacityRecord.model_validate_json(raw)  # everything stored is valid
    assert grpc.StatusCode.INVALID_ARGUMENT in codes
    assert (await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec()), metadata=BOB)).id
