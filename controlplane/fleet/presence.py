"""Which control-plane instance holds each node's agent stream (several instances share a fleet).

Agents may hold their stream to any instance. The instance that receives a node's heartbeats
judges its liveness (as with one instance) and announces it with a presence key on its own etcd
lease (``keys.presence(node_id)`` -> the instance's identity). Every instance follows the presence
keys the others write. A node that no live instance announces (its agent's instance died, or its
stream closed) is judged by the leader: Suspect and Lost after the same timeouts, counted from when
its presence vanished (:class:`controlplane.fleet.registry.NodeRegistry` keeps that clock).
"""

from __future__ import annotations

import asyncio
import contextlib

from controlplane.store import keys
from controlplane.store.base import LeaseExpired, Store, WatchEvent, WatchEventKind
from tokenfab.errors import is_temporary
from tokenfab.logs import get_logger

log = get_logger("fleet")


class Presence:
    """This instance's presence keys (on one lease) and the set other instances announce."""

    def __init__(self, store: Store, identity: str, ttl_s: int) -> None:
        self._store = store
        self.identity = identity
        self.ttl_s = ttl_s
        self._lease = 0  # 0: not announcing (not started, or stopped)
        self.local: set[str] = set()  # nodes whose agent holds a stream to this instance
        self.remote: set[str] = set()  # ... to another live instance (presence keys)

    def holds(self, node_id: str) -> bool:
        """Whether some live instance (this one or another) holds the node's stream."""
        return node_id in self.local or node_id in self.remote

    async def load(self) -> None:
        """The presence keys other instances hold now."""
        present, _ = await self._store.list_prefix(keys.PRESENCE)
        for kv in present:
            if kv.value.decode() != self.identity:
                self.remote.add(kv.key[len(keys.PRESENCE) :])

    async def start(self) -> None:
        self._lease = await self._store.grant_lease(self.ttl_s)

    async def stop(self) -> None:
        """Revoke the lease: this instance's presence keys go at once, not after the TTL."""
        if self._lease:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._store.revoke_lease(self._lease), 2.0)
            self._lease = 0

    def apply(self, event: WatchEvent) -> str | None:
        """Follow one change of the presence keys; returns the node another instance has just
        announced (its liveness is that instance's to judge), else None."""
        node_id = event.key[len(keys.PRESENCE) :]
        if event.kind is WatchEventKind.DELETE:
            self.remote.discard(node_id)
            return None
        if event.value.decode() == self.identity:
            return None
        self.remote.add(node_id)
        return node_id

    async def announce(self, node_id: str, present: bool) -> None:
        """Write (or remove, when it is still ours) the node's presence key. A failure is logged
        and left: the next keep after a lost lease announces every local node again."""
        if not self._lease:
            return
        try:
            if present:
                await self._store.put(keys.presence(node_id), self.identity.encode(), lease=self._lease)
            else:
                kv = await self._store.get(keys.presence(node_id))
                if kv is not None and kv.value.decode() == self.identity:
                    await self._store.compare_and_delete(kv.key, expected_mod_revision=kv.mod_revision)
        except Exception as exc:
            fields = {"node": node_id, "error": str(exc) or type(exc).__name__}
            if is_temporary(exc):
                log.warning("fleet.presence_failed", retryable=True, **fields)
            else:
                log.error("fleet.presence_failed", retryable=False, **fields)

    async def keep(self) -> None:
        """Refresh the lease; when it is gone (cut off for a TTL), announce again on a new one."""
        if not self._lease:
            return
        try:
            await self._store.refresh_lease(self._lease)
        except LeaseExpired:
            self._lease = await self._store.grant_lease(self.ttl_s)
            for node_id in sorted(self.local):
                await self.announce(node_id, True)
