"""The in-memory store honours the Store contract (the same cases run against etcd in
tests/integration/test_store_contract.py)."""

from __future__ import annotations

from controlplane.store.memory import MemoryStore
from tests.store_contract import check_contract


async def test_memory_store_contract() -> None:
    await check_contract(MemoryStore())


async def test_memory_store_lease_expiry() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    lease = await store.grant_lease(5)
    await store.put("/k", b"v", lease=lease)
    assert await store.expire_leases() == []
    now[0] = 6.0
    assert await store.expire_leases() == [lease]
    assert await store.get("/k") is None
