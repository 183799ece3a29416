"""In-memory Store for pure unit tests: same semantics as etcd, no processes.

Revisions are a single counter incremented by every write, as in etcd. Leases expire only when
:meth:`MemoryStore.expire_leases` is called with a time past their deadline (tests drive time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from controlplane.store.base import KeyValue, LeaseExpired, WatchEvent, WatchEventKind


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

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        return self._write(key, value, lease)

    async def compare_and_put(
        self, key: str, value: bytes, *, expected_mod_revision: int, lease: int = 0
    ) -> int | None:
        current = self._data.get(key)
        if (current.mod_revision if current else 0) != expected_mod_revision:
            return None
        return self._write(key, value, lease)

    async def create_all(self, items: list[tuple[str, bytes]]) -> int | None:
        if any(key in self._data for key, _ in items):
            return None
        # one revision for the whole transaction, as etcd does
        self._revision += 1
        for key, value in items:
            self._data[key] = KeyValue(key, value, self._revision, self._revision)
            self._emit(WatchEvent(WatchEventKind.PUT, key, value, self._revision))
        return self._revision

    async def compare_and_delete(self, key: str, *, expected_mod_revision: int) -> bool:
        current = self._data.get(key)
        if current is None or current.mod_revision != expected_mod_revision:
            return False
        self._delete(key)
        return True

    async def watch_prefix(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchEvent]:
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
