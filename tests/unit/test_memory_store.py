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


async def test_a_follower_whose_revision_was_compacted_lists_again_and_resumes() -> None:
    import asyncio

    from controlplane.store.base import WatchEvent
    from controlplane.store.follow import follow

    store = MemoryStore()
    seen: dict[str, bytes] = {}

    async def resync() -> int:
        kvs, revision = await store.list_prefix("/f/")
        seen.clear()
        seen.update({kv.key: kv.value for kv in kvs})
        return revision

    def apply(event: WatchEvent) -> None:
        seen[event.key] = event.value

    stale = await store.put("/f/a", b"1")  # the follower last saw this revision
    await store.put("/f/a", b"2")
    await store.put("/f/b", b"3")
    await store.compact(store.revision)
    resyncs: list[int] = []
    task = asyncio.create_task(
        follow(store, "/f/", apply, start_revision=stale, resync=resync, what="t",
               on_resync=lambda: resyncs.append(store.revision))
    )  # fmt: skip
    try:
        for _ in range(100):
            await asyncio.sleep(0)
        assert resyncs, "the compaction made the follower list again"
        assert seen == {"/f/a": b"2", "/f/b": b"3"}
        await store.put("/f/c", b"4")  # and it follows from the listing on
        for _ in range(100):
            await asyncio.sleep(0)
        assert seen["/f/c"] == b"4"
        assert len(resyncs) == 1
    finally:
        task.cancel()


async def test_resuming_from_a_revision_without_a_way_to_list_again_is_refused() -> None:
    import pytest

    from controlplane.store.follow import follow

    with pytest.raises(ValueError, match="needs resync"):
        await follow(MemoryStore(), "/f/", lambda e: None, start_revision=5, what="t")


async def test_a_fenced_store_refuses_writes_without_leadership_and_checks_the_term() -> None:
    import pytest

    from controlplane.store.base import Fence, Fenced
    from controlplane.store.fenced import FencedStore

    store = MemoryStore()
    term: list[Fence | None] = [None]
    writes = FencedStore(store, lambda: term[0])
    with pytest.raises(Fenced, match="not the leader"):
        await writes.put("/r/a", b"x")
    assert not await writes.holds()
    created = await store.compare_and_put("/leader", b"me", expected_mod_revision=0)
    assert created is not None
    term[0] = Fence("/leader", created)
    assert await writes.holds()
    assert await writes.create_all([("/r/a", b"x")]) is not None
    kv = await store.get("/leader")
    assert kv is not None and await store.compare_and_delete("/leader", expected_mod_revision=kv.mod_revision)
    await store.compare_and_put("/leader", b"successor", expected_mod_revision=0)
    assert not await writes.holds()
    with pytest.raises(Fenced):
        await writes.create_all([("/r/b", b"duplicate")])
    assert await store.get("/r/b") is None
    assert (await writes.list_prefix("/r/"))[0][0].key == "/r/a"  # reads go through
