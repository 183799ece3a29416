"""The gateway's stateful parts on the in-memory store: the lane table follows the store's watch,
and metering adds up across instances in hourly buckets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from controlplane.domain.replicas import ReplicaState
from controlplane.gateway import GatewayConfig
from controlplane.gateway.metering import Meter, read_usage
from controlplane.gateway.routes import RouteWatch
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.test_gateway_routing import replica, request


async def settle(predicate: object, *, rounds: int = 200) -> None:
    for _ in range(rounds):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("the watch never delivered")


async def test_the_lane_table_follows_the_store() -> None:
    store = MemoryStore()
    await store.put(keys.capacity_request("a1"), request("a1", "alpha").model_dump_json().encode())
    await store.put(keys.replica("r1"), replica("r1", "a1").model_dump_json().encode())
    await store.put(keys.replica("bad"), b"{not a record")  # one bad record hides nothing else
    changes: list[int] = []
    watch = RouteWatch(store, on_change=lambda lanes: changes.append(len(lanes)))
    await watch.start()
    try:
        lane = watch.lane("alpha", "m")
        assert lane is not None
        assert [b.replica_id for b in lane.backends] == ["r1"]
        await store.put(keys.replica("r2"), replica("r2", "a1", tps=50).model_dump_json().encode())
        await settle(lambda: len(watch.lanes[("alpha", "m")].backends) == 2)
        draining = replica("r1", "a1", ReplicaState.DRAINING)
        await store.put(keys.replica("r1"), draining.model_dump_json().encode())
        await settle(lambda: [b.replica_id for b in watch.lanes[("alpha", "m")].backends] == ["r2"])
        assert await store_delete(store, keys.capacity_request("a1"))
        await settle(lambda: watch.lane("alpha", "m") is None)
        assert watch.models("alpha") == []
        assert changes
    finally:
        await watch.stop()


async def store_delete(store: MemoryStore, key: str) -> bool:
    current = await store.get(key)
    assert current is not None
    return await store.compare_and_delete(key, expected_mod_revision=current.mod_revision)


async def test_usage_adds_up_per_tenant_request_and_hour_across_instances() -> None:
    store = MemoryStore()
    clock = [datetime(2026, 1, 1, 9, 59, tzinfo=UTC)]
    one = Meter(store, clock=lambda: clock[0])
    two = Meter(store, clock=lambda: clock[0])
    one.record("alpha", "a1", "m", 10, 5)
    two.record("alpha", "a1", "m", 1, 1)
    two.record("beta", "b1", "m", 7, 7)
    await asyncio.gather(one.flush(), two.flush())
    clock[0] = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    one.record("alpha", "a1", "m", 3, 3)
    assert await one.flush() == 1
    assert await one.flush() == 0  # nothing pending: nothing written
    rows = await read_usage(store, tenant="alpha")
    assert [(r.hour.hour, r.requests, r.prompt_tokens, r.completion_tokens) for r in rows] == [
        (9, 2, 11, 6),
        (10, 1, 3, 3),
    ]
    later = await read_usage(store, since=datetime(2026, 1, 1, 10, 30, tzinfo=UTC))
    assert [(r.tenant, r.hour.hour) for r in later] == [("alpha", 10)]
    assert {r.tenant for r in await read_usage(store)} == {"alpha", "beta"}


def test_the_gateway_listens_beyond_loopback_only_with_tls(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.yaml"
    assert GatewayConfig(tenants_file=tenants).listen == "127.0.0.1:8080"
    assert GatewayConfig(tenants_file=tenants, listen="[::1]:9000").port == 9000
    with pytest.raises(ValidationError, match=r"0\.0\.0\.0 is not loopback"):
        GatewayConfig(tenants_file=tenants, listen="0.0.0.0:8080")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert (
        GatewayConfig(tenants_file=tenants, listen="0.0.0.0:443", tls_cert=cert, tls_key=key).host
        == "0.0.0.0"
    )
    with pytest.raises(ValidationError, match="listen: expected host:port"):
        GatewayConfig(tenants_file=tenants, listen="8080")
    with pytest.raises(ValidationError, match="policy"):
        GatewayConfig(tenants_file=tenants, policy="fastest")  # type: ignore[arg-type]
