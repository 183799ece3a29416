"""WatchCapacity across an etcd compaction, with real processes: a three-member etcd cluster, the
real control plane talking to one member only, and a gRPC client watching.

The member dies while the client watches; requests change on the surviving members and etcd
compacts its history; the member comes back. The control plane's resume revision is gone, so it
must list again and send the changes it missed as upserts on the *same* stream (no error, no
re-subscription), then keep following."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from controlplane.api.server import ControlPlane
from controlplane.config import ControlPlaneConfig
from controlplane.domain.capacity import CapacityRecord
from controlplane.embedded.etcd import EtcdCluster, free_port
from controlplane.metrics import ControlPlaneMetrics
from controlplane.store import keys
from controlplane.store.etcd import EtcdStore
from tests.integration.conftest import FAST
from tokenfab.v1 import capacity_pb2, capacity_pb2_grpc

BOB = (("authorization", "Bearer bob-token"),)
UPSERT = capacity_pb2.CapacityEvent.KIND_UPSERT


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EtcdCluster]:
    members = EtcdCluster(tmp_path / "etcd", 3)
    await members.start()
    yield members
    members.stop()


def spec() -> capacity_pb2.CapacitySpec:
    return capacity_pb2.CapacitySpec(
        model="qwen2.5-7b-instruct",
        output_tokens_per_second=2000,
        latency=capacity_pb2.LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=50),
    )


async def test_a_capacity_watch_survives_a_compaction_of_its_resume_revision(
    cluster: EtcdCluster, tmp_path: Path
) -> None:
    m0, m1, m2 = cluster.members
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: bob, token: bob-token}\n")
    config = ControlPlaneConfig(
        address=f"127.0.0.1:{free_port()}",
        etcd_endpoint=m0.endpoint,  # this instance sees etcd through m0 only
        tenants_file=tenants,
        **FAST,
    )
    plane = ControlPlane(config, metrics=ControlPlaneMetrics())
    await plane.start()
    writer = EtcdStore(endpoints=[(m.host, m.client_port) for m in (m1, m2)], timeout_s=2.0)
    await writer.connect()
    try:
        async with grpc.aio.insecure_channel(config.address) as channel:
            stub = capacity_pb2_grpc.CapacityServiceStub(channel)
            first = await stub.Create(capacity_pb2.CreateCapacityRequest(spec=spec()), metadata=BOB)
            watch = stub.Watch(capacity_pb2.WatchCapacityRequests(), metadata=BOB)
            event = await asyncio.wait_for(watch.read(), 10)
            assert event.kind == capacity_pb2.CapacityEvent.KIND_SNAPSHOT and event.request.id == first.id

            m0.kill()  # the instance's watch breaks; it retries m0
            kv = await writer.get(keys.capacity_request(first.id))
            assert kv is not None
            record = CapacityRecord.model_validate_json(kv.value)
            moved = record.model_copy(update={"generation": record.generation + 1})
            assert await writer.compare_and_put(
                kv.key, moved.model_dump_json().encode(), expected_mod_revision=kv.mod_revision
            )
            twin = record.model_copy(update={"id": "cr-missedwhiledown"})
            await writer.put(keys.capacity_request(twin.id), twin.model_dump_json().encode())
            _, revision = await writer.list_prefix(keys.CAPACITY_REQUESTS)
            await writer.compact(revision)
            await m0.start()  # rejoins and catches up, compaction included

            missed: dict[str, int] = {}
            while len(missed) < 2:  # both changes arrive on the same stream, as upserts
                event = await asyncio.wait_for(watch.read(), 60)
                assert event is not grpc.aio.EOF, "the watch ended instead of re-listing"
                assert event.kind == UPSERT
                missed[event.request.id] = event.request.generation
            assert missed == {first.id: record.generation + 1, twin.id: record.generation}

            # and it follows again from the fresh listing
            await stub.Cancel(capacity_pb2.CancelCapacityRequest(id=first.id), metadata=BOB)
            event = await asyncio.wait_for(watch.read(), 30)
            assert event.kind == UPSERT and event.request.id == first.id
            assert event.request.status.phase == "Cancelled"
            watch.cancel()
    finally:
        await writer.close()
        await plane.stop(grace_s=0.1)
