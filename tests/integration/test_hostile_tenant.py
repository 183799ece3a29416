"""A hostile (or careless) tenant against the real control plane: it can break nothing but its
own requests. The update above its ceiling, a record that no longer loads, a burst of concurrent
creates against a quota, a flood of watches, a priority above its ceiling; an admin's typo; and a
node that flaps its device health."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import aetcd
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from controlplane.api.server import ControlPlane
from controlplane.embedded.etcd import EtcdProcess
from controlplane.executor.service import executor_server
from controlplane.security import Kind
from tests.integration.conftest import ControlPlaneFactory, Deployment, dial, metric_value, wait_for
from tests.integration.helpers import register_request
from tokenfab.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    capacity_pb2,
    capacity_pb2_grpc,
    fleet_pb2,
    fleet_pb2_grpc,
    types_pb2,
)

TENANTS = (
    "tenants:\n"
    "  - {name: mallory, token: mallory-token, max_accelerators: 6, max_priority: 10}\n"
    "  - {name: alice, token: alice-token}\n"
)
MALLORY = (("authorization", "Bearer mallory-token"),)
ALICE = (("authorization", "Bearer alice-token"),)


def spec(**over: object) -> capacity_pb2.CapacitySpec:
    fields: dict[str, object] = {
        "model": "qwen2.5-7b-instruct",
        "output_tokens_per_second": 2000,
        "latency": capacity_pb2.LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=50),
    }
    return capacity_pb2.CapacitySpec(**(fields | over))  # type: ignore[arg-type]


@pytest.fixture
async def plane(control_plane: ControlPlaneFactory, tmp_path: Path) -> ControlPlane:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANTS)
    return await control_plane(tenants_file=tenants, max_streams_per_principal=8)


async def test_an_update_above_the_ceiling_is_refused_naming_the_field(plane: ControlPlane) -> None:
    async with dial(plane, "anonymous") as channel:
        stub = capacity_pb2_grpc.CapacityServiceStub(channel)
        auto = capacity_pb2.AutoscalingSpec(enabled=True, max_output_tokens_per_second=3000)
        created = await stub.Create(
            capacity_pb2.CreateCapacityRequest(spec=spec(autoscaling=auto)), metadata=ALICE
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Update(
                capacity_pb2.UpdateCapacityRequest(id=created.id, output_tokens_per_second=50_000),
                metadata=ALICE,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith("output_tokens_per_second:")
        got = await stub.Get(capacity_pb2.GetCapacityRequest(id=created.id), metadata=ALICE)
        assert got.generation == 1 and got.spec.output_tokens_per_second == 2000  # nothing stored
        cancelled = await stub.Cancel(capacity_pb2.CancelCapacityRequest(id=created.id), metadata=ALICE)
        assert cancelled.status.phase == "Cancelled"


async def test_a_record_that_does_not_load_is_quarantined_not_fatal(
    plane: ControlPlane, etcd: EtcdProcess
) -> None:
    async with dial(plane, "anonymous") as channel:
        stub = capacity_pb2_grpc.CapacityServiceStub(channel)
        good = await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec()), metadata=ALICE)
        # what an older version (or a hand edit) left behind: a ceiling below the floor
        bad = b'{"id": "cr-broken", "tenant": "mallory", "spec": {"model": "qwen2.5-7b-instruct"}}'
        async with aetcd.Client(host=etcd.host, port=etcd.client_port) as client:
            await client.put(b"/tokenfab/v1/capacity/requests/cr-broken", bad)
        alice = await stub.List(capacity_pb2.ListCapacityRequests(), metadata=ALICE)
        assert [r.id for r in alice.requests] == [good.id]  # other tenants are unaffected
        mine = await stub.List(capacity_pb2.ListCapacityRequests(), metadata=MALLORY)
        assert [(r.id, r.status.phase) for r in mine.requests] == [("cr-broken", "Invalid")]
        shown = await stub.Get(capacity_pb2.GetCapacityRequest(id="cr-broken"), metadata=MALLORY)
        assert shown.status.phase == "Invalid" and "spec" in shown.status.conditions[0].message
        with pytest.raises(grpc.aio.AioRpcError) as info:  # still invisible to others
            await stub.Get(capacity_pb2.GetCapacityRequest(id="cr-broken"), metadata=ALICE)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(capacity_pb2.WatchCapacityRequests(), metadata=ALICE)
        first = await asyncio.wait_for(watch.read(), 5)  # the watch goes on past the bad record
        assert first.request.id == good.id
        watch.cancel()
        quarantined = metric_value(plane.metrics.quarantined_records, kind="capacity_request")
        assert quarantined >= 1
        async with dial(plane, "admin") as admin:
            events = fleet_pb2_grpc.FleetServiceStub(admin)

            async def quarantine_event() -> bool:
                listed = await events.ListEvents(
                    fleet_pb2.ListEventsRequest(request_id="cr-broken"), timeout=5
                )
                return any(e.kind == "quarantined" for e in listed.events)

            await wait_for(quarantine_event, timeout=5, interval=0.1, what="a quarantined event")
        deleted = await stub.Cancel(capacity_pb2.CancelCapacityRequest(id="cr-broken"), metadata=MALLORY)
        assert "deleted" in deleted.status.conditions[0].message
        assert not (await stub.List(capacity_pb2.ListCapacityRequests(), metadata=MALLORY)).requests


async def test_fifty_concurrent_creates_never_exceed_the_quota(plane: ControlPlane) -> None:
    async with dial(plane, "anonymous") as channel:
        stub = capacity_pb2_grpc.CapacityServiceStub(channel)

        async def create(i: int) -> grpc.StatusCode:
            try:
                await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec(), idempotency_key=f"k{i}"),
                                  metadata=MALLORY, timeout=60)  # fmt: skip
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(create(i) for i in range(50)))
        listed = (await stub.List(capacity_pb2.ListCapacityRequests(), metadata=MALLORY)).requests
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert plane.capacity is not None
    used = sum(
        r.estimate.accelerators
        for r in await plane.capacity.list(None)
        if r.tenant == "mallory" and r.estimate
    )
    assert 0 < used <= 6, used  # max_accelerators: 6
    assert codes.count(grpc.StatusCode.OK) == len(listed) >= 1
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes


async def test_a_flood_of_watches_is_bounded_per_principal(plane: ControlPlane) -> None:
    async with dial(plane, "anonymous") as channel:
        stub = capacity_pb2_grpc.CapacityServiceStub(channel)
        watches = [stub.Watch(capacity_pb2.WatchCapacityRequests(), metadata=MALLORY) for _ in range(12)]
        codes = []
        for watch in watches:
            try:
                await asyncio.wait_for(watch.read(), 1.0)
                codes.append("open")
            except TimeoutError:
                codes.append("open")  # nothing to say yet: the watch is open
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code().name)
        assert codes.count("open") == 8 and codes.count("RESOURCE_EXHAUSTED") == 4, codes
        other = stub.Watch(capacity_pb2.WatchCapacityRequests(), metadata=ALICE)  # others unaffected
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(other.read(), 1.0)
        for watch in [*watches, other]:
            watch.cancel()


async def test_priority_above_the_tenants_ceiling_is_refused(plane: ControlPlane) -> None:
    async with dial(plane, "anonymous") as channel:
        stub = capacity_pb2_grpc.CapacityServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec(priority=500)), metadata=MALLORY)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (info.value.details() or "").startswith("spec.priority:")
        assert (
            await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec(priority=10)), metadata=MALLORY)
        ).id


async def test_a_far_future_lease_extension_is_invalid_argument(
    plane: ControlPlane, deployment: Deployment
) -> None:
    async with dial(plane, "anonymous", tls=deployment.tls(Kind.NODE, "fz-1")) as node:
        await agent_pb2_grpc.AgentServiceStub(node).Register(register_request("fz-1"), timeout=5)
    async with dial(plane, "admin") as channel:
        fleet = fleet_pb2_grpc.FleetServiceStub(channel)
        for until in (datetime(2099, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)):
            ts = Timestamp()
            ts.FromDatetime(until)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await fleet.ExtendLease(fleet_pb2.ExtendLeaseRequest(node_id="fz-1", until=ts), timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (info.value.details() or "").startswith("until:")
        out_of_range = fleet_pb2.ExtendLeaseRequest(node_id="fz-1", until=Timestamp(seconds=2**62))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fleet.ExtendLease(out_of_range, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_node_flapping_its_device_health_is_damped(
    plane: ControlPlane, deployment: Deployment, etcd: EtcdProcess
) -> None:
    """A (compromised or broken) node flips a device's health on every beat: after a few changes
    the device is held unhealthy, so etcd sees a handful of writes, not one per beat."""
    async with dial(plane, "anonymous", tls=deployment.tls(Kind.NODE, "flappy")) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        await stub.Register(register_request("flappy"), timeout=5)
        call = stub.Connect()
        for seq in range(1, 41):
            health = types_pb2.DEVICE_HEALTH_UNHEALTHY if seq % 2 else types_pb2.DEVICE_HEALTH_HEALTHY
            devices = [types_pb2.DeviceTelemetry(index=0, health=health), types_pb2.DeviceTelemetry(index=1)]
            await call.write(
                agent_pb2.AgentMessage(
                    heartbeat=agent_pb2.Heartbeat(node_id="flappy", seq=seq, devices=devices)
                )
            )
            while (await asyncio.wait_for(call.read(), 5)).WhichOneof("body") != "ack":
                pass
        call.cancel()
    async with aetcd.Client(host=etcd.host, port=etcd.client_port) as client:
        record = await client.get(b"/tokenfab/v1/nodes/flappy")
    assert record is not None
    assert record.version <= 10, f"{record.version} writes for 40 flapping beats"
    assert metric_value(plane.metrics.health_flaps_damped) == 1


async def test_reconcile_passes_go_on_past_a_record_that_does_not_load(
    control_plane: ControlPlaneFactory, tmp_path: Path, etcd: EtcdProcess
) -> None:
    """The leader's reconcile loop (with an executor: the real executor server over an empty
    cluster) keeps completing passes past a request that does not load (before, every pass failed
    for every tenant)."""
    from controlplane.embedded.etcd import free_port
    from tests.integration.authz_matrix import EmptyCluster

    server, _ = executor_server(EmptyCluster(), insecure_local_admin=True)  # plaintext: the plane is admin
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        tenants = tmp_path / "tenants.yaml"
        tenants.write_text(TENANTS)
        plane = await control_plane(
            tenants_file=tenants, executors={"c": f"127.0.0.1:{port}"}, reconcile_interval_s=0.1
        )
        async with aetcd.Client(host=etcd.host, port=etcd.client_port) as client:
            await client.put(
                b"/tokenfab/v1/capacity/requests/cr-broken", b'{"id": "cr-broken", "tenant": "mallory"}'
            )

        def passes() -> float:
            samples = plane.metrics.reconcile_seconds.collect()[0].samples
            return next(x.value for x in samples if x.name.endswith("_count"))

        async with dial(plane, "anonymous") as channel:
            stub = capacity_pb2_grpc.CapacityServiceStub(channel)
            await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec()), metadata=ALICE)
            start = passes()
            await wait_for(lambda: passes() >= start + 5, what="five reconcile passes after the bad record")
        failed = metric_value(plane.metrics.reconcile_errors, step="pass")
        assert failed == 0
    finally:
        await server.stop(0.1)
