"""Hypothesis throws random registrations and heartbeats at the real server (real etcd, real
gRPC over loopback). Invariants: the server answers every call with a deliberate status (never
INTERNAL/UNKNOWN), never stores a node that fails validation, and keeps serving."""

from __future__ import annotations

import asyncio

import aetcd
import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.domain.nodes import NodeRecord
from controlplane.embedded.etcd import EtcdProcess
from tests.integration.conftest import ControlPlaneFactory
from tokenfab.v1 import agent_pb2, agent_pb2_grpc, types_pb2

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
text = st.text(max_size=70)
ids = st.one_of(st.sampled_from(["fz-a", "fz-b", "fz-c"]), text)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
devices = st.builds(
    types_pb2.Device,
    uuid=st.one_of(st.sampled_from(["u0", "u1"]), text),
    index=st.integers(min_value=0, max_value=2**32 - 1),
    model=text,
    memory_bytes=st.one_of(st.sampled_from([0, 80 << 30, 1 << 60]), u64),
    numa_node=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    health=st.integers(min_value=0, max_value=5),
)
registrations = st.builds(
    agent_pb2.RegisterRequest,
    node_id=ids,
    cluster=st.one_of(st.just("c1"), text),
    region=text,
    vendor=st.integers(min_value=0, max_value=6),
    devices=st.lists(devices, max_size=6),
    agent_version=text,
    labels=st.dictionaries(text, text, max_size=3),
)
telemetry = st.builds(
    types_pb2.DeviceTelemetry,
    index=st.integers(min_value=0, max_value=8),
    utilization_percent=st.floats(allow_nan=True, allow_infinity=True),
    memory_used_bytes=u64,
    temperature_celsius=st.floats(allow_nan=True, allow_infinity=True),
    ecc_uncorrected_errors=u64,
    health=st.integers(min_value=0, max_value=5),
)
heartbeats = st.builds(agent_pb2.Heartbeat, node_id=ids, seq=u64, devices=st.lists(telemetry, max_size=4))


async def stored_records(etcd: EtcdProcess) -> list[bytes]:
    async with aetcd.Client(host=etcd.host, port=etcd.client_port) as client:
        return [kv.value for kv in await client.get_prefix(b"/tokenfab/v1/nodes/")]


async def test_random_registrations_and_heartbeats(
    control_plane: ControlPlaneFactory, etcd: EtcdProcess
) -> None:
    plane = await control_plane(secure=False)  # validation: the local principal acts for any node
    codes: set[grpc.StatusCode] = set()

    async with grpc.aio.insecure_channel(plane.config.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)

        async def one(reg: agent_pb2.RegisterRequest, beat: agent_pb2.Heartbeat) -> None:
            try:
                await stub.Register(reg, timeout=5)
                codes.add(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() in ALLOWED, (exc.code(), exc.details(), reg)
                codes.add(exc.code())
            call = stub.Connect(timeout=5)
            try:
                await call.write(agent_pb2.AgentMessage(heartbeat=beat))
                reply = await call.read()
                assert reply.WhichOneof("body") == "ack"
                codes.add(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() in ALLOWED, (exc.code(), exc.details(), beat)
                codes.add(exc.code())
            finally:
                call.cancel()

        loop = asyncio.get_running_loop()

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(reg=registrations, beat=heartbeats)
        def run(reg: agent_pb2.RegisterRequest, beat: agent_pb2.Heartbeat) -> None:
            asyncio.run_coroutine_threadsafe(one(reg, beat), loop).result(timeout=30)

        await asyncio.to_thread(run)

        # every stored node is a valid record; the server still serves a well-formed agent
        for raw in await stored_records(etcd):
            NodeRecord.model_validate_json(raw)
        ok = await stub.Register(
            agent_pb2.RegisterRequest(
                node_id="after-fuzz", cluster="c1", vendor=types_pb2.VENDOR_BIREN,
                devices=[types_pb2.Device(uuid="b0", index=0, model="BR104", memory_bytes=32 << 30)],
            ),
            timeout=5,
        )  # fmt: skip
        assert ok.created
    assert grpc.StatusCode.INVALID_ARGUMENT in codes  # the fuzzer did reach validation
