"""Presence keys: which control-plane instance holds each node's stream (in-memory store)."""

from __future__ import annotations

from controlplane.fleet.presence import Presence
from controlplane.store import keys
from controlplane.store.base import WatchEvent, WatchEventKind
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import FakeClock


async def holder(store: MemoryStore, node_id: str) -> str | None:
    kv = await store.get(keys.presence(node_id))
    return kv.value.decode() if kv is not None else None


async def test_announce_follow_and_reannounce_after_a_lost_lease(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    a, b = Presence(store, "a", ttl_s=5), Presence(store, "b", ttl_s=5)
    await a.announce("n1", True)  # not started: announces nothing
    assert await holder(store, "n1") is None
    await a.start()
    a.local.add("n1")
    await a.announce("n1", True)
    assert await holder(store, "n1") == "a"
    await b.load()
    assert b.remote == {"n1"} and b.holds("n1") and not b.holds("n2")

    # b follows the keys: its own is not news, a's is; a deletion forgets it
    assert b.apply(WatchEvent(WatchEventKind.PUT, keys.presence("n2"), b"b", 9)) is None
    assert b.apply(WatchEvent(WatchEventKind.PUT, keys.presence("n3"), b"a", 10)) == "n3"
    assert b.apply(WatchEvent(WatchEventKind.DELETE, keys.presence("n1"), b"", 11)) is None
    assert b.remote == {"n3"}

    # a was cut off past its TTL: its key went with the lease; keep() announces again
    clock.advance(6)
    await store.expire_leases()
    assert await holder(store, "n1") is None
    await a.keep()
    assert await holder(store, "n1") == "a"

    # another instance's key is never removed by a; a's own goes on announce(False) and on stop()
    await b.start()
    await b.announce("n4", True)
    await a.announce("n4", False)
    assert await holder(store, "n4") == "b"
    await a.announce("n1", False)
    assert await holder(store, "n1") is None
    await b.stop()
    assert await holder(store, "n4") is None
