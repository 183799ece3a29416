"""The Store contract: a small, etcd-shaped key-value interface.

Every write that matters is a compare-and-swap on ``mod_revision`` (the revision of the key's last
change, 0 for "must not exist"), so two writers can never silently overwrite each other: the loser
gets ``False`` back, re-reads and decides again. Watches deliver every change after a revision, in
order, which lets a restarted watcher resume without missing or repeating events. Leases attach
keys to a TTL (leader election and liveness keys in later issues).

Why heartbeats do not come through here: a fleet of 10,000 nodes beating every 2 s would be 5,000
etcd writes per second, each a raft round and an fsync. Liveness is instead kept in memory by the
leader (:mod:`controlplane.fleet.registry`), and only *state changes* (Ready -> Suspect, a device
turning unhealthy, a cordon) are written. After a restart the registry reloads the persisted
states and rebuilds liveness from the agents' reconnecting streams.

Two guarantees for writers and watchers that outlive a fault:

- **Fenced writes.** Every write takes an optional :class:`Fence`: a key (the leader key) and the
  create revision the writer saw it at. The write and the fence's comparison are one transaction,
  so a writer that lost what entitled it to write (a leader paused past its lease while another
  was elected) changes nothing, however late it wakes up; it gets :class:`Fenced`, not a lost race.
- **Compaction.** A watch from a revision the store has compacted away raises
  :class:`RevisionCompacted`; the watcher must list again (:func:`controlplane.store.follow.follow`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

# The store's errors sit in the one error tree (controlplane.errors); imported from here as always.
from controlplane.errors import Fenced as Fenced
from controlplane.errors import LeaseExpired as LeaseExpired
from controlplane.errors import RevisionCompacted as RevisionCompacted
from controlplane.errors import StoreUnavailable as StoreUnavailable


@dataclass(frozen=True, slots=True)
class Fence:
    """A write under this fence lands only while ``key`` exists with ``create_revision``: a key on
    a lease (the leader key) that expired and was created again by someone else has another one."""

    key: str
    create_revision: int


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0


class WatchEventKind(StrEnum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: WatchEventKind
    key: str
    value: bytes  # empty for DELETE
    mod_revision: int


@runtime_checkable
class Store(Protocol):
    async def get(self, key: str) -> KeyValue | None: ...

    async def list_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """All keys under ``prefix`` (sorted) and the store revision they were read at."""
        ...

    async def put(self, key: str, value: bytes, *, lease: int = 0, fence: Fence | None = None) -> int:
        """Unconditional write; returns the new revision. Prefer :meth:`compare_and_put`.

        Every write raises :class:`Fenced` (writing nothing) when ``fence`` no longer holds.
        """
        ...

    async def compare_and_put(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: int = 0,
        fence: Fence | None = None,
    ) -> int | None:
        """Write only if the key's mod_revision equals ``expected_mod_revision`` (0: absent).

        Returns the new mod_revision, or None when the comparison failed (nothing written).
        """
        ...

    async def compare_and_delete(
        self, key: str, *, expected_mod_revision: int, fence: Fence | None = None
    ) -> bool: ...

    async def create_all(self, items: list[tuple[str, bytes]], *, fence: Fence | None = None) -> int | None:
        """Create every key atomically, only if none exists; the new revision, or None."""
        ...

    async def compact(self, revision: int) -> None:
        """Forget the history before ``revision`` (etcd's compaction; what an operator's or the
        chart's periodic compaction does). Watches from before it raise RevisionCompacted."""
        ...

    def watch_prefix(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` from ``start_revision`` (inclusive), until cancelled.

        Raises :class:`RevisionCompacted` when ``start_revision`` is older than the history kept."""
        ...

    async def grant_lease(self, ttl_s: int) -> int: ...

    async def refresh_lease(self, lease_id: int) -> None: ...

    async def revoke_lease(self, lease_id: int) -> None: ...

    async def close(self) -> None: ...
