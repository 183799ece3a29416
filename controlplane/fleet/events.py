"""The event log in etcd: append (bounded), list (newest first)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from controlplane.domain.events import EventRecord
from controlplane.store import keys
from controlplane.store.base import Store

MAX_EVENTS = 1000


class EventLog:
    def __init__(self, store: Store, *, limit: int = MAX_EVENTS) -> None:
        self._store = store
        self.limit = limit
        self._seq = itertools.count()
        self._appended = 0

    async def append(self, *events: EventRecord) -> None:
        for event in events:
            key = keys.event(int(event.at.timestamp() * 1e9), next(self._seq) % 1_000_000)
            await self._store.put(key, event.model_dump_json().encode())
            self._appended += 1
        if events and self._appended % 20 < len(events):  # trim now and then, not on every append
            await self.trim()

    async def record(self, kind: str, message: str, *, node_id: str = "") -> None:
        """Append one event about a node, stamped now (the API's and the agents' steps)."""
        await self.append(EventRecord(at=datetime.now(UTC), kind=kind, message=message, node_id=node_id))

    async def trim(self) -> None:
        kvs, _ = await self._store.list_prefix(keys.EVENTS)
        for kv in kvs[: max(0, len(kvs) - self.limit)]:  # keys sort by time
            await self._store.compare_and_delete(kv.key, expected_mod_revision=kv.mod_revision)

    async def list(self, *, limit: int = 100, node_id: str = "", request_id: str = "") -> list[EventRecord]:
        kvs, _ = await self._store.list_prefix(keys.EVENTS)
        found = []
        for kv in reversed(kvs):
            event = EventRecord.model_validate_json(kv.value)
            if (node_id and event.node_id != node_id) or (request_id and event.request_id != request_id):
                continue
            found.append(event)
            if len(found) >= limit:
                break
        return found
