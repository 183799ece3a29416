"""Hypothesis throws random registrations and heartbeats at the real server (real etcd, real
gRPC over loopback), and random launches at the real executor server. Invariants: the server answers every call with a deliberate status (never
INTERNAL/UNKNOWN), never stores a node that fails validation, and keeps serving."""

from __future__ import annotations

import asyncio
import tempfile

import aetcd
import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.catalog.types import load_catalog
from controlplane.domain.nodes import NodeRecord
from controlplane.embedded.etcd import EtcdProcess, free_port
from controlplane.executor.expand import ID, EngineConfig, expand_process, launch_env, log_path
from controlplane.executor.service import executor_server
from tests.integration.conftest import ControlPlaneFactory
from tokenfab.accelerators import VISIBLE_DEVICES
from tokenfab.v1 import agent_pb2, agent_pb2_grpc, executor_pb2, executor_pb2_grpc, types_pb2

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


# -- the executor's API: nothing from the wire becomes a command, an environment or a path --------

ENV_NAMES = {"TOKENFAB_NODE_ID", "TOKENFAB_REPLICA_ID", "TOKENFAB_GENERATION", "MACA_PATH"}


class ExpandingCluster:
    """The executor's real expansion (what RayExecutor hands its actors), recorded instead of
    started: the fuzz checks what a replica would run, without starting Ray for every example."""

    cluster = "fuzz"

    def __init__(self) -> None:
        self.config = EngineConfig(load_catalog())
        self.started: list[tuple[executor_pb2.ReplicaLaunch, dict[str, str], tuple[str, ...]]] = []

    async def inventory(self) -> executor_pb2.InventoryResponse:
        return executor_pb2.InventoryResponse(cluster=self.cluster)

    async def start(self, launch: executor_pb2.ReplicaLaunch) -> executor_pb2.ReplicaObservation:
        env = launch_env(launch)
        argv: tuple[str, ...] = ()
        if launch.WhichOneof("kind") == "process":
            spec = expand_process(launch, self.config)
            env.update(spec.env)
            argv = spec.argv
        self.started.append((launch, env, argv))
        return executor_pb2.ReplicaObservation(replica_id=launch.replica_id, state="starting")

    async def stop(self, replica_id: str, drain_s: float) -> bool:
        log_path(tempfile.gettempdir(), replica_id)  # the file a real stop would read
        return False

    async def observe(self) -> list[executor_pb2.ReplicaObservation]:
        return []


names = st.one_of(st.sampled_from(["cr-1-r1", "cr-1", "gpu-1", "../../x", "a;rm -rf /", "$(id)"]), text)
launches = st.builds(
    executor_pb2.ReplicaLaunch,
    replica_id=names, request_id=names, node_id=names, generation=st.integers(0, 2**40),
    model=st.one_of(st.sampled_from(["qwen2.5-7b-instruct", "llama-3.1-8b-instruct"]), text),
    vendor=st.one_of(st.sampled_from(["nvidia", "ascend", "metax", "biren"]), text),
    accelerator=st.one_of(st.sampled_from(["H100", "910B3", "C500", "BR104"]), text),
    devices=st.lists(st.integers(0, 2**32 - 1), max_size=4),
    tensor_parallel=st.integers(0, 8),
    engine=st.one_of(st.sampled_from(["vllm", "vllm-ascend", "mindie", "simulated"]), text),
    resources=st.dictionaries(st.sampled_from(["GPU", "NPU", "CPU", "memory"]), st.floats(), max_size=2),
    process=st.builds(
        executor_pb2.ProcessEngine, dtype=st.one_of(st.sampled_from(["bf16", "fp8"]), text),
        port=st.integers(0, 70000), max_num_batched_tokens=st.integers(0, 2**32 - 1),
        ready_timeout_s=st.floats(),
    ),
)  # fmt: skip


async def test_random_launches_never_become_a_command() -> None:
    backend = ExpandingCluster()
    server, _health = executor_server(backend, insecure_local_admin=True)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")  # loopback: this test is the local principal
    await server.start()
    loop = asyncio.get_running_loop()
    codes: set[grpc.StatusCode] = set()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = executor_pb2_grpc.ExecutorServiceStub(channel)

            async def one(launch: executor_pb2.ReplicaLaunch, drain: float) -> None:
                for call in (
                    stub.StartReplica(executor_pb2.StartReplicaRequest(launch=launch), timeout=10),
                    stub.StopReplica(executor_pb2.StopReplicaRequest(replica_id=launch.replica_id, drain_s=drain),
                                     timeout=10),
                ):  # fmt: skip
                    try:
                        await call
                        codes.add(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() in {grpc.StatusCode.INVALID_ARGUMENT}, (exc.code(), exc.details())
                        codes.add(exc.code())

            @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
            @given(launch=launches, drain=st.floats())
            def run(launch: executor_pb2.ReplicaLaunch, drain: float) -> None:
                asyncio.run_coroutine_threadsafe(one(launch, drain), loop).result(timeout=30)

            await asyncio.to_thread(run)
            # a well-formed launch is still served after the storm
            good = executor_pb2.ReplicaLaunch(
                replica_id="cr-1-r1", request_id="cr-1", node_id="gpu-1", model="qwen2.5-7b-instruct",
                vendor="nvidia", accelerator="H100", devices=[0], tensor_parallel=1, engine="vllm",
                resources={"GPU": 1.0}, process=executor_pb2.ProcessEngine(dtype="bf16", port=18000, ready_timeout_s=60),
            )  # fmt: skip
            await stub.StartReplica(executor_pb2.StartReplicaRequest(launch=good), timeout=10)
    finally:
        await server.stop(0.1)
    assert grpc.StatusCode.INVALID_ARGUMENT in codes and backend.started
    for launch, env, argv in backend.started:
        visible = {v for v in VISIBLE_DEVICES.values()} | {
            f"RAY_EXPERIMENTAL_NOSET_{v}" for v in VISIBLE_DEVICES.values()
        }
        assert set(env) <= ENV_NAMES | visible, env
        assert ID.match(env["TOKENFAB_REPLICA_ID"]) and ID.match(launch.request_id)
        if argv:
            assert argv[:2] == ("vllm", "serve"), argv  # only the catalog's engines, built here
            for free_text in (launch.replica_id, launch.request_id, launch.node_id):
                assert free_text not in argv
