"""Contract checks every Store implementation must pass (memory in unit tests, etcd in integration)."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.store.base import Fence, Fenced, LeaseExpired, RevisionCompacted, Store, WatchEventKind


async def check_contract(store: Store, prefix: str = "/contract/") -> None:
    key = prefix + "a"
    # create-if-absent
    rev = await store.compare_and_put(key, b"1", expected_mod_revision=0)
    assert rev is not None
    assert await store.compare_and_put(key, b"x", expected_mod_revision=0) is None  # exists
    # versioned update
    kv = await store.get(key)
    assert kv is not None
    assert kv.value == b"1"
    assert kv.mod_revision == rev
    rev2 = await store.compare_and_put(key, b"2", expected_mod_revision=rev)
    assert rev2 is not None
    assert rev2 > rev
    assert await store.compare_and_put(key, b"stale", expected_mod_revision=rev) is None
    kv = await store.get(key)
    assert kv is not None
    assert kv.value == b"2"
    assert kv.create_revision == rev
    # list with revision
    await store.put(prefix + "b", b"3")
    await store.put("/outside/c", b"4")
    listed, revision = await store.list_prefix(prefix)
    assert [k.key for k in listed] == [prefix + "a", prefix + "b"]
    assert revision >= listed[-1].mod_revision
    # watch replays from a revision, then follows
    seen = []

    async def follow() -> None:
        async for event in store.watch_prefix(prefix, start_revision=rev):
            seen.append((event.kind, event.key, event.value))
            if len(seen) == 4:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    kv = await store.get(prefix + "b")
    assert kv is not None
    assert not await store.compare_and_delete(prefix + "b", expected_mod_revision=kv.mod_revision + 100)
    assert await store.compare_and_delete(prefix + "b", expected_mod_revision=kv.mod_revision)
    await asyncio.wait_for(task, 5)
    assert seen == [
        (WatchEventKind.PUT, key, b"1"),
        (WatchEventKind.PUT, key, b"2"),
        (WatchEventKind.PUT, prefix + "b", b"3"),
        (WatchEventKind.DELETE, prefix + "b", b""),
    ]
    # atomic multi-key create: all or nothing
    rev = await store.create_all([(prefix + "m1", b"x"), (prefix + "m2", b"y")])
    assert rev is not None
    m1, m2 = await store.get(prefix + "m1"), await store.get(prefix + "m2")
    assert m1 is not None and m2 is not None and m1.mod_revision == m2.mod_revision == rev
    assert await store.create_all([(prefix + "m3", b"z"), (prefix + "m1", b"again")]) is None
    assert await store.get(prefix + "m3") is None
    # leases
    lease = await store.grant_lease(30)
    await store.put(prefix + "leased", b"v", lease=lease)
    await store.refresh_lease(lease)
    leased = await store.get(prefix + "leased")
    assert leased is not None
    assert leased.lease == lease
    await store.revoke_lease(lease)
    assert await store.get(prefix + "leased") is None
    with pytest.raises(LeaseExpired):
        await store.refresh_lease(lease)
    await check_fences(store, prefix + "fence/")
    await check_compaction(store, prefix + "compact/")


async def check_fences(store: Store, prefix: str) -> None:
    """Writes under a fence land while the fence key keeps its create revision, and none lands
    (Fenced, nothing written) once the key was deleted or created again by someone else."""
    holder = prefix + "leader"
    created = await store.compare_and_put(holder, b"me", expected_mod_revision=0)
    assert created is not None
    fence = Fence(holder, created)
    rev = await store.compare_and_put(prefix + "r", b"1", expected_mod_revision=0, fence=fence)
    assert rev is not None
    assert (
        await store.compare_and_put(prefix + "r", b"x", expected_mod_revision=rev + 99, fence=fence) is None
    )
    assert await store.create_all([(prefix + "c", b"1")], fence=fence) is not None
    assert await store.put(prefix + "p", b"1", fence=fence) > rev
    kv = await store.get(holder)
    assert kv is not None and await store.compare_and_delete(holder, expected_mod_revision=kv.mod_revision)
    again = await store.compare_and_put(holder, b"someone else", expected_mod_revision=0)
    assert again is not None and again != created  # a new term: another create revision
    before, _ = await store.list_prefix(prefix)
    with pytest.raises(Fenced):
        await store.compare_and_put(prefix + "r", b"late", expected_mod_revision=rev, fence=fence)
    with pytest.raises(Fenced):
        await store.create_all([(prefix + "d", b"late")], fence=fence)
    with pytest.raises(Fenced):
        await store.put(prefix + "p", b"late", fence=fence)
    r = await store.get(prefix + "r")
    assert r is not None
    with pytest.raises(Fenced):
        await store.compare_and_delete(prefix + "r", expected_mod_revision=r.mod_revision, fence=fence)
    after, _ = await store.list_prefix(prefix)
    assert after == before, "a fenced writer changed nothing"
    # the new holder's fence works
    assert await store.put(prefix + "p", b"new", fence=Fence(holder, again)) > again


async def check_compaction(store: Store, prefix: str) -> None:
    """A watch from a compacted revision raises RevisionCompacted (and does not hang or retry)."""
    first = await store.put(prefix + "k", b"0")
    last = first
    for i in range(1, 4):
        last = await store.put(prefix + "k", str(i).encode())
    await store.compact(last)

    async def watch_from(revision: int) -> None:
        async for _event in store.watch_prefix(prefix, start_revision=revision):
            return

    with pytest.raises(RevisionCompacted) as info:
        await asyncio.wait_for(watch_from(first), 10)
    assert info.value.compacted_revision >= last
    # from the compaction point on, the history is still there
    await asyncio.wait_for(watch_from(last), 10)
