"""A Store whose every write is fenced: the leader's view of the store.

The reconciler and the autoscaler act only while their instance leads. Checking that at the start
of a pass is not enough: a pass can outlast the lease (executor calls time out after seconds; a
process can be paused), and a successor may already be acting. :class:`FencedStore` passes each
write the fence of the current term (:meth:`controlplane.ha.election.Election.fence`), which the
store checks in the same transaction as the write; when this instance does not lead at all, the
write is refused before it is sent. Reads, watches and leases go straight through.

:meth:`FencedStore.holds` asks the store whether the fence still holds, for effects that are not
store writes (stopping an actor the leader believes orphaned): check, then act.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from controlplane.store.base import Fence, Fenced, KeyValue, Store, WatchEvent


class FencedStore:
    def __init__(self, store: Store, fence: Callable[[], Fence | None]) -> None:
        self._store = store
        self._fence = fence

    def _current(self) -> Fence:
        fence = self._fence()
        if fence is None:
            raise Fenced("not the leader: write refused")
        return fence

    async def holds(self) -> bool:
        """Whether this instance still holds its fence in the store (one read)."""
        fence = self._fence()
        if fence is None:
            return False
        kv = await self._store.get(fence.key)
        return kv is not None and kv.create_revision == fence.create_revision

    # -- reads, watches, leases: unchanged -----------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        return await self._store.get(key)

    async def list_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        return await self._store.list_prefix(prefix)

    def watch_prefix(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchEvent]:
        return self._store.watch_prefix(prefix, start_revision=start_revision)

    async def grant_lease(self, ttl_s: int) -> int:
        return await self._store.grant_lease(ttl_s)

    async def refresh_lease(self, lease_id: int) -> None:
        await self._store.refresh_lease(lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        await self._store.revoke_lease(lease_id)

    async def compact(self, revision: int) -> None:
        await self._store.compact(revision)

    async def close(self) -> None:
        await self._store.close()

    # -- writes: fenced ------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: int = 0, fence: Fence | None = None) -> int:
        return await self._store.put(key, value, lease=lease, fence=fence or self._current())

    async def compare_and_put(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: int = 0,
        fence: Fence | None = None,
    ) -> int | None:
        return await self._store.compare_and_put(
            key,
            value,
            expected_mod_revision=expected_mod_revision,
            lease=lease,
            fence=fence or self._current(),
        )

    async def compare_and_delete(
        self, key: str, *, expected_mod_revision: int, fence: Fence | None = None
    ) -> bool:
        return await self._store.compare_and_delete(
            key, expected_mod_revision=expected_mod_revision, fence=fence or self._current()
        )

    async def create_all(self, items: list[tuple[str, bytes]], *, fence: Fence | None = None) -> int | None:
        return await self._store.create_all(items, fence=fence or self._current())
