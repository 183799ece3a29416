"""In-memory Store for pure unit tests: same semantics as etcd, no processes.

Revisions are a single counter incremented by every write, as in etcd. Leases expire only when
:meth:`MemoryStore.expire_leases` is called with a time past their deadline (tests drive time).
Fences and compaction behave as in etcd: a fenced write checks the fence key's create revision
first and writes nothing when it moved; :meth:`MemoryStore.compact` drops the history before a
revision, and a watch from before it raises RevisionCompacted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from controlplane.store.base import (
    Fence,
    Fenced,
    KeyValue,
    LeaseExpired,
    RevisionCompacted,
    WatchEvent,
    WatchEventKind,
)


@dataclass
class _Lease:
    ttl_s: int
    deadline: float
    keys: set[str] = field(default_factory=set)


class MemoryStore:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._data: dict[str, KeyValue] = {}
        self._revision = 0
        self._history: list[WatchEvent] = []
        self._compacted = 0  # history before this revision is gone
        self._watchers: list[tuple[str, asyncio.Queue[WatchEvent]]] = []
        self._leases: dict[int, _Lease] = {}
        self._next_lease = 1
        self._clock = clock

    @property
    def revision(self) -> int:
        return self._revision

    async def get(self, key: str) -> KeyValue | None:
        return self._data.get(key)

    async def list_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        found = [kv for k, kv in sorted(self._data.items()) if k.startswith(prefix)]
        return found, self._revision

    def _emit(self, event: WatchEvent) -> None:
        self._history.append(event)
        for prefix, queue in self._watchers:
            if event.key.startswith(prefix):
                queue.put_nowait(event)

    def _write(self, key: str, value: bytes, lease: int) -> int:
        if lease and lease not in self._leases:
            raise KeyError(f"lease {lease} not found")
        self._revision += 1
        previous = self._data.get(key)
        create = previous.create_revision if previous else self._revision
        self._data[key] = KeyValue(key, value, create, self._revision, lease)
        if lease:
            self._leases[lease].keys.add(key)
        self._emit(WatchEvent(WatchEventKind.PUT, key, value, self._revision))
        return self._revision

    def _delete(self, key: str) -> None:
        self._revision += 1
        del self._data[key]
        self._emit(WatchEvent(WatchEventKind.DELETE, key, b"", self._revision))

    def _check(self, fence: Fence | None) -> None:
        if fence is None:
            return
        holder = self._data.get(fence.key)
        if holder is None or holder.create_revision != fence.create_revision:
            raise Fenced(f"{fence.key} is no longer at create revision {fence.create_revision}")

    async def put(self, key: str, value: bytes, *, lease: int = 0, fence: Fence | None = None) -> int:
        self._check(fence)
        return self._write(key, value, lease)

    async def compare_and_put(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: int = 0,
        fence: Fence | None = None,
    ) -> int | None:
        self._check(fence)
        current = self._data.get(key)
        if (current.mod_revision if current else 0) != expected_mod_revision:
            return None
        return self._write(key, value, lease)

    async def create_all(self, items: list[tuple[str, bytes]], *, fence: Fence | None = None) -> int | None:
        self._check(fence)
        if any(key in self._data for key, _ in items):
            return None
        # one revision for the whole transaction, as etcd does
        self._revision += 1
        for key, value in items:
            self._data[key] = KeyValue(key, value, self._revision, self._revision)
            self._emit(WatchEvent(WatchEventKind.PUT, key, value, self._revision))
        return self._revision

    async def compare_and_delete(
        self, key: str, *, expected_mod_revision: int, fence: Fence | None = None
    ) -> bool:
        self._check(fence)
        current = self._data.get(key)
        if current is None or current.mod_revision != expected_mod_revision:
            return False
        self._delete(key)
        return True

    async def compact(self, revision: int) -> None:
        self._compacted = max(self._compacted, min(revision, self._revision))
        self._history = [e for e in self._history if e.mod_revision >= self._compacted]

    async def watch_prefix(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchEvent]:
        if start_revision < self._compacted:
            raise RevisionCompacted(self._compacted)
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        for event in self._history:
            if event.mod_revision >= start_revision and event.key.startswith(prefix):
                queue.put_nowait(event)
        entry = (prefix, queue)
        self._watchers.append(entry)
        try:
            while True:
                yield await queue.get()
        finally:
            self._watchers.remove(entry)

    async def grant_lease(self, ttl_s: int) -> int:
        lease_id = self._next_lease
        self._next_lease += 1
        self._leases[lease_id] = _Lease(ttl_s, self._clock() + ttl_s)
        return lease_id

    async def refresh_lease(self, lease_id: int) -> None:
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseExpired(f"lease {lease_id} not found")
        lease.deadline = self._clock() + lease.ttl_s

    async def revoke_lease(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id, None)
        for key in sorted(lease.keys if lease else ()):
            if key in self._data and self._data[key].lease == lease_id:
                self._delete(key)

    async def expire_leases(self) -> list[int]:
        now = self._clock()
        expired = [lease_id for lease_id, lease in self._leases.items() if lease.deadline <= now]
        for lease_id in expired:
            await self.revoke_lease(lease_id)
        return expired

    async def close(self) -> None:
        return None
