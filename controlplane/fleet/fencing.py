"""Fencing: which replicas a node must no longer run, for the agents' FENCE command.

A node declared Lost has its replicas failed and replaced at once. If it was only cut off (a
partition, a frozen agent), its engines may still be running when it comes back. The executor
stops such actors through Ray whenever Ray can reach them; the agent is the second line: every
instance keeps, per node, the replicas recorded there in a terminal state (Failed or Stopped,
still in the reconciler's history), and sends them with their generation to the node's agent
when its stream opens and whenever the set grows. The agent stops any local process that still
carries one of them (see ``agents/fence.py``).

One list and one watch of the replica records per instance, whatever the number of nodes.
"""

from __future__ import annotations

import asyncio
import contextlib

from pydantic import ValidationError

from controlplane.domain.replicas import TERMINAL, ReplicaRecord
from controlplane.store import keys
from controlplane.store.base import Store, WatchEventKind
from controlplane.store.follow import follow
from tokenfab.logs import get_logger

log = get_logger("fleet.fencing")


class ReplicaFence:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._fenced: dict[str, dict[str, int]] = {}  # node -> {replica id: generation}
        self._node_of: dict[str, str] = {}  # replica id -> node, for deletions
        self._versions: dict[str, int] = {}  # node -> bumped when its fenced set grows
        self._task: asyncio.Task[None] | None = None

    def fenced(self, node_id: str) -> dict[str, int]:
        return dict(self._fenced.get(node_id, {}))

    def version(self, node_id: str) -> int:
        return self._versions.get(node_id, 0)

    async def start(self) -> None:
        revision = await self._load()
        self._task = asyncio.create_task(
            follow(
                self._store, keys.REPLICAS,
                lambda e: self._apply(e.key, e.value if e.kind is WatchEventKind.PUT else None),
                start_revision=revision + 1, resync=self._load, what="replicas (fencing)",
            ),  # a failure may be a compaction past us: list again
            name="replica-fence",
        )  # fmt: skip

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _load(self) -> int:
        kvs, revision = await self._store.list_prefix(keys.REPLICAS)
        self._fenced.clear()
        self._node_of.clear()
        for kv in kvs:
            self._apply(kv.key, kv.value)
        return revision

    def _apply(self, key: str, value: bytes | None) -> None:
        replica_id = key[len(keys.REPLICAS) :]
        if value is None:
            node = self._node_of.pop(replica_id, None)
            if node is not None:
                self._fenced.get(node, {}).pop(replica_id, None)
            return
        try:
            record = ReplicaRecord.model_validate_json(value)
        except ValidationError:
            return
        self._node_of[replica_id] = record.node_id
        fenced = self._fenced.setdefault(record.node_id, {})
        if record.state in TERMINAL:
            if fenced.get(replica_id) != record.generation:
                fenced[replica_id] = record.generation
                self._versions[record.node_id] = self._versions.get(record.node_id, 0) + 1
        else:
            fenced.pop(replica_id, None)
