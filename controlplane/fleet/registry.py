"""The node registry: who is in the fleet, in which state, and how alive.

Design (why heartbeats are cheap):

* The **registration and the conclusions** (state, cordon, per-device health) are a
  :class:`~controlplane.domain.nodes.NodeRecord` in the store, written with compare-and-swap on
  ``mod_revision``. They change rarely: on Register, on a state transition, on a cordon, when a
  device's health changes.
* **Liveness** (last heartbeat time, latest telemetry) is in memory only. A heartbeat updates two
  fields and returns; it touches the store only when it causes a transition (the first beat after
  registration, a Suspect node beating again, a device turning unhealthy). 10,000 nodes beating
  every 2 s cost 5,000 dictionary updates per second, not 5,000 raft writes.
* A **monitor** task (every quarter heartbeat interval) compares each node's silence with the
  timing: silent longer than ``interval * suspect_after_missed`` -> Suspect, longer than
  ``lost_after_s`` -> Lost. :meth:`NodeRegistry.check` is one pass of it, callable with a fake clock.
* On **restart** the registry reloads every record and gives each live-looking node a fresh grace
  period (``last_seen = now``): agents reconnect within their backoff, re-register (no change) and
  beat, and the nodes stay Ready. Nodes whose agents never return go Suspect, then Lost, exactly
  as if they had stopped beating at the restart.

All mutations of one node are serialised by a per-node lock; the store write happens before the
in-memory record and the subscribers see the change, so a failed write changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from controlplane.domain.nodes import (
    DeviceTelemetry,
    NodeRecord,
    NodeRegistration,
    NodeState,
    validation_message,
)
from controlplane.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from controlplane.fleet.presence import Presence
from controlplane.fleet.states import (
    BeatPhase,
    beating_state,
    check_transition,
    health_changes,
    is_beating,
    liveness_target,
)
from controlplane.fleet.types import (
    ChangeKind,
    CommandKind,
    CommandSink,
    FleetTiming,
    NodeCommand,
    NodeView,
    Subscription,
)
from controlplane.metrics import ControlPlaneMetrics
from controlplane.store import keys
from controlplane.store.base import Store, WatchEvent, WatchEventKind
from controlplane.store.follow import follow
from tokenfab.errors import is_temporary
from tokenfab.logs import get_logger

log = get_logger("fleet")

_CAS_ATTEMPTS = 3


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Entry:
    record: NodeRecord
    mod_revision: int
    last_seen: float | None = None  # monotonic seconds
    last_wall: datetime | None = None
    telemetry: tuple[DeviceTelemetry, ...] = ()
    sinks: list[CommandSink] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    phase: BeatPhase | None = None  # when its next beats are due (local stream only)

    def view(self) -> NodeView:
        return NodeView(self.record, self.last_wall, self.telemetry)


class NodeRegistry:
    def __init__(
        self,
        store: Store,
        *,
        timing: FleetTiming | None = None,
        metrics: ControlPlaneMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _utcnow,
        workloads: Callable[[str], int] = lambda node_id: 0,
        is_leader: Callable[[], bool] = lambda: True,
        identity: str = "",
        presence_ttl_s: int = 5,
    ) -> None:
        self._store = store
        self._is_leader = is_leader
        self.identity = identity or f"registry-{id(self):x}"
        self._presence = Presence(store, self.identity, presence_ttl_s)
        self._absent_since: dict[str, float] = {}  # no stream anywhere since (leader's view)
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        self.timing = timing or FleetTiming()
        self.metrics = metrics or ControlPlaneMetrics()
        self._clock = clock
        self._wall = wall
        self._workloads = workloads  # replicas still on a node; a drain ends at zero
        self._entries: dict[str, _Entry] = {}
        self._subscribers: set[asyncio.Queue[tuple[ChangeKind, NodeView]]] = set()
        self._monitor: asyncio.Task[None] | None = None
        self._create_locks: dict[str, asyncio.Lock] = {}
        self._next_check = math.inf  # the earliest suspect deadline the last check saw

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, *, monitor: bool = True) -> None:
        """Load every node from the store and (by default) start the liveness monitor and follow
        what other control-plane instances write (nodes, and which instance holds whose stream)."""
        await self._presence.load()
        kvs, revision = await self._store.list_prefix(keys.NODES)
        now = self._clock()
        for kv in kvs:
            try:
                record = NodeRecord.model_validate_json(kv.value)
            except ValidationError as exc:
                field_name, message = validation_message(exc)
                log.error("node.unreadable", key=kv.key, field=field_name, error=message)
                continue
            entry = _Entry(record, kv.mod_revision)
            if record.state is not NodeState.LOST and record.node_id not in self._presence.remote:
                entry.last_seen = now  # grace period: agents get a full lost timeout to reconnect
            self._entries[record.node_id] = entry
            self._count(record, +1)
        log.info("fleet.loaded", nodes=len(self._entries), revision=revision)
        if monitor:
            await self._presence.start()
            self._monitor = asyncio.create_task(self._run_monitor(), name="fleet-monitor")
            self._tasks = [
                asyncio.create_task(
                    follow(
                        self._store,
                        keys.NODES,
                        self._apply_remote,
                        start_revision=revision + 1,
                        resync=self._resync_nodes,
                        what="nodes",
                    ),
                    name="fleet-follow",
                ),
                asyncio.create_task(
                    follow(self._store, keys.PRESENCE, self._apply_presence, what="presence"),
                    name="fleet-presence",
                ),
            ]

    async def stop(self) -> None:
        for task in [*self._tasks, *([self._monitor] if self._monitor else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), 5.0)
        self._monitor, self._tasks = None, []
        await self._presence.stop()

    # -- several control-plane instances ---------------------------------------------------------
    #
    # Every instance follows the node records the others write; who holds which node's stream is
    # controlplane.fleet.presence (a node no live instance announces is judged by the leader).

    def _apply_remote(self, event: WatchEvent) -> None:
        node_id = keys.node_id_of(event.key)
        entry = self._entries.get(node_id)
        if event.kind is WatchEventKind.DELETE:
            if entry is not None:
                self._count(entry.record, -1)
                del self._entries[node_id]
                self._publish(ChangeKind.DELETE, entry.view())
            return
        if entry is not None and (event.mod_revision <= entry.mod_revision or entry.lock.locked()):
            return  # our own write (landed, or in flight), or older than what we hold
        try:
            record = NodeRecord.model_validate_json(event.value)
        except ValidationError:
            return
        if entry is None:
            entry = _Entry(record, event.mod_revision)
            self._entries[node_id] = entry
        else:
            self._count(entry.record, -1)
            entry.record, entry.mod_revision = record, event.mod_revision
        self._count(record, +1)
        self._publish(ChangeKind.UPSERT, entry.view())

    async def _resync_nodes(self) -> int:
        """After a compaction: every node record as it is now, as the changes missed would have
        left it (newer records applied, nodes deleted meanwhile dropped); the revision read at."""
        kvs, revision = await self._store.list_prefix(keys.NODES)
        listed = set()
        for kv in kvs:
            listed.add(keys.node_id_of(kv.key))
            self._apply_remote(WatchEvent(WatchEventKind.PUT, kv.key, kv.value, kv.mod_revision))
        for node_id, entry in list(self._entries.items()):
            if node_id not in listed and entry.mod_revision <= revision and not entry.lock.locked():
                self._apply_remote(WatchEvent(WatchEventKind.DELETE, keys.node(node_id), b"", revision))
        return revision

    def _apply_presence(self, event: WatchEvent) -> None:
        node_id = self._presence.apply(event)
        if node_id is not None:
            self._absent_since.pop(node_id, None)
            entry = self._entries.get(node_id)
            if entry is not None and node_id not in self._presence.local:
                entry.last_seen = None  # another instance has the stream: it judges

    async def _run_monitor(self) -> None:
        last_keep = 0.0
        while True:
            # every check interval, or sooner when a node's suspect deadline comes first
            wait = min(self.timing.check_interval_s, self._next_check - self._clock())
            await asyncio.sleep(max(0.005, wait))
            try:
                if self._clock() - last_keep >= self._presence.ttl_s / 3:
                    last_keep = self._clock()
                    await self._presence.keep()
                await self.check()
            except Exception as exc:  # never let one bad pass stop liveness tracking (fixed pace)
                if is_temporary(exc):
                    log.warning("fleet.monitor_failed", error=str(exc) or type(exc).__name__, retryable=True)
                else:
                    log.exception("fleet.monitor_failed", retryable=False)

    # -- reads ---------------------------------------------------------------------------------

    def nodes(self) -> list[NodeView]:
        return [self._entries[k].view() for k in sorted(self._entries)]

    def get(self, node_id: str) -> NodeView:
        return self._entry(node_id).view()

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, node_id: str) -> _Entry:
        entry = self._entries.get(node_id)
        if entry is None:
            raise NotFound(f"node {node_id!r} is not registered")
        return entry

    def subscribe(self) -> Subscription:
        """Every change from this call on (registered immediately, so nothing is missed)."""
        subscription = Subscription(self._subscribers)
        return subscription

    def _publish(self, kind: ChangeKind, view: NodeView) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait((kind, view))
            except asyncio.QueueFull:  # a stuck watcher must not stall the registry
                self._subscribers.discard(queue)
                log.warning("fleet.subscriber_dropped", reason="queue full")

    # -- commands to agents --------------------------------------------------------------------

    def attach(self, node_id: str, sink: CommandSink) -> None:
        entry = self._entry(node_id)
        entry.sinks.append(sink)
        if entry.phase is not None:
            entry.phase.restart()  # a new stream: the agent's beat schedule starts again
        if node_id not in self._presence.local:
            self._presence.local.add(node_id)
            self._background(self._presence.announce(node_id, True))

    def detach(self, node_id: str, sink: CommandSink) -> None:
        entry = self._entries.get(node_id)
        if entry is not None and sink in entry.sinks:
            entry.sinks.remove(sink)
            if not entry.sinks and node_id in self._presence.local:
                self._presence.local.discard(node_id)
                self._background(self._presence.announce(node_id, False))

    def _background(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a synchronous caller in a test): nothing to announce to
            coro.close()
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _send(self, entry: _Entry, command: NodeCommand) -> None:
        for sink in entry.sinks:
            sink.push(command)

    # -- writes --------------------------------------------------------------------------------

    async def _write(self, entry: _Entry, new: NodeRecord) -> None:
        """CAS-write ``new`` over ``entry``; on a lost race reload and raise Conflict."""
        old = entry.record  # before the await: the follower may see our own write land first
        revision = await self._store.compare_and_put(
            keys.node(new.node_id), new.model_dump_json().encode(), expected_mod_revision=entry.mod_revision
        )
        if revision is None:
            await self._reload(entry)
            raise Conflict(f"node {new.node_id!r} changed concurrently")
        old_state = old.state
        entry.record = new
        entry.mod_revision = revision
        self._count(old, -1)
        self._count(new, +1)
        if old_state is not new.state:
            self.metrics.transitions.labels(old_state.value, new.state.value).inc()
            log.info(
                "node.transition",
                node=new.node_id,
                old=old_state.value,
                new=new.state.value,
                reason=new.state_reason,
            )
        self._publish(ChangeKind.UPSERT, entry.view())

    async def _reload(self, entry: _Entry) -> None:
        kv = await self._store.get(keys.node(entry.record.node_id))
        if kv is not None:
            self._count(entry.record, -1)
            entry.record = NodeRecord.model_validate_json(kv.value)
            entry.mod_revision = kv.mod_revision
            self._count(entry.record, +1)

    async def _mutate(self, entry: _Entry, change: Callable[[NodeRecord], NodeRecord]) -> NodeRecord:
        """Apply ``change`` and persist it, retrying a lost compare-and-swap a few times."""
        async with entry.lock:
            for attempt in range(_CAS_ATTEMPTS):
                new = change(entry.record)
                if new == entry.record:
                    return new
                try:
                    await self._write(entry, new)
                    return new
                except Conflict:
                    if attempt == _CAS_ATTEMPTS - 1:
                        raise
            raise AssertionError("unreachable")

    def _moved(self, record: NodeRecord, new_state: NodeState, reason: str | None = None) -> NodeRecord:
        edge = check_transition(record.state, new_state)
        return record.model_copy(
            update={"state": new_state, "state_reason": reason or edge, "state_since": self._wall()}
        )

    async def register(self, registration: NodeRegistration) -> tuple[NodeView, bool]:
        """Create or update a node. Idempotent: the same registration twice changes nothing."""
        node_id = registration.node_id
        entry = self._entries.get(node_id)
        if entry is None:
            lock = self._create_locks.setdefault(node_id, asyncio.Lock())
            async with lock:
                entry = self._entries.get(node_id)
                if entry is None:
                    view = await self._create(registration)
                    self._create_locks.pop(node_id, None)
                    return view, True

        def change(record: NodeRecord) -> NodeRecord:
            new = record.model_copy(update={"registration": registration})
            if record.registration.devices != registration.devices:
                new = new.model_copy(update={"device_health": {}})  # new hardware facts reset health
            if record.state is NodeState.LOST:
                new = self._moved(new, NodeState.REGISTERING)
            return new

        await self._mutate(entry, change)
        if entry.record.state is not NodeState.LOST and entry.last_seen is None:
            entry.last_seen = self._clock()
        self.metrics.registrations.labels("updated").inc()
        return entry.view(), False

    async def _create(self, registration: NodeRegistration) -> NodeView:
        record = NodeRecord(
            registration=registration,
            state=NodeState.REGISTERING,
            state_reason="registered",
            state_since=self._wall(),
        )
        revision = await self._store.compare_and_put(
            keys.node(registration.node_id), record.model_dump_json().encode(), expected_mod_revision=0
        )
        if revision is None:  # another control-plane instance created it first: adopt theirs
            kv = await self._store.get(keys.node(registration.node_id))
            if kv is None:
                raise Conflict(f"node {registration.node_id!r} changed concurrently")
            if registration.node_id not in self._entries:  # the follower may have added it already
                entry = _Entry(NodeRecord.model_validate_json(kv.value), kv.mod_revision)
                self._entries[registration.node_id] = entry
                self._count(entry.record, +1)
            self._entries[registration.node_id].last_seen = self._clock()
            view, _ = await self.register(registration)
            return view
        if registration.node_id not in self._entries:  # the follower may have seen our write first
            self._entries[registration.node_id] = _Entry(record, revision)
            self._count(record, +1)
        entry = self._entries[registration.node_id]
        entry.last_seen = self._clock()
        self.metrics.registrations.labels("created").inc()
        log.info(
            "node.registered",
            node=registration.node_id,
            vendor=registration.vendor.value,
            accelerator=registration.accelerator,
            devices=len(registration.devices),
            leased=registration.lease is not None,
        )
        self._publish(ChangeKind.UPSERT, entry.view())
        return entry.view()

    async def heartbeat(self, node_id: str, telemetry: Sequence[DeviceTelemetry]) -> NodeState:
        """Record a beat. Fast path: two assignments; the store is written only on a transition."""
        entry = self._entry(node_id)
        record = entry.record
        if record.state is NodeState.LOST:
            raise FailedPrecondition(f"node {node_id!r} was declared lost; register again before beating")
        known = {d.index for d in record.registration.devices}
        for position, sample in enumerate(telemetry):
            if sample.index not in known:
                raise InvalidArgument(
                    f"devices[{position}].index",
                    f"device index {sample.index} is not registered on this node",
                )
        entry.last_seen = self._clock()
        if entry.phase is None or entry.phase.interval_s != self.timing.heartbeat_interval_s:
            entry.phase = BeatPhase(self.timing.heartbeat_interval_s)
        entry.phase.observe(entry.last_seen)
        entry.last_wall = self._wall()
        entry.telemetry = tuple(telemetry)
        health = health_changes(record, telemetry)
        target = beating_state(cordoned=record.cordoned, draining=record.draining)
        if health or (record.state is not target and not is_beating(record.state)):

            def change(current: NodeRecord) -> NodeRecord:
                new = current
                if health:
                    new = new.model_copy(update={"device_health": {**current.device_health, **health}})
                    for index, (status, reason) in health.items():
                        log.warning(
                            "device.health", node=node_id, device=index, health=status.value, reason=reason
                        )
                if not is_beating(current.state) and current.state is not NodeState.LOST:
                    wanted = beating_state(cordoned=current.cordoned, draining=current.draining)
                    new = self._moved(new, wanted)
                return new

            await self._mutate(entry, change)
        return entry.record.state

    async def cordon(self, node_id: str, reason: str = "") -> NodeView:
        entry = self._entry(node_id)

        def change(record: NodeRecord) -> NodeRecord:
            new = record.model_copy(update={"cordoned": True, "cordon_reason": reason})
            if record.state is NodeState.READY:
                new = self._moved(new, NodeState.CORDONED, f"cordoned: {reason}" if reason else None)
            return new

        await self._mutate(entry, change)
        self._send(entry, NodeCommand(CommandKind.CORDON, reason))
        return entry.view()

    async def uncordon(self, node_id: str) -> NodeView:
        entry = self._entry(node_id)

        def change(record: NodeRecord) -> NodeRecord:
            new = record.model_copy(update={"cordoned": False, "cordon_reason": "", "draining": False})
            if record.state in (NodeState.CORDONED, NodeState.DRAINING):
                new = self._moved(new, NodeState.READY)
            return new

        await self._mutate(entry, change)
        self._send(entry, NodeCommand(CommandKind.UNCORDON))
        return entry.view()

    async def set_lease_end(self, node_id: str, end: datetime, note: str) -> NodeView:
        """Revoke (an earlier end) or extend a leased node's lease; owned nodes have none."""
        entry = self._entry(node_id)
        if entry.record.registration.lease is None:
            raise FailedPrecondition(f"node_id: {node_id} is owned, not leased (drain it instead)")

        def change(record: NodeRecord) -> NodeRecord:
            return record.model_copy(update={"lease_end_override": end, "lease_note": note})

        await self._mutate(entry, change)
        log.info("node.lease", node=node_id, lease_end=end.isoformat(), note=note)
        return entry.view()

    async def drain(self, node_id: str, reason: str = "") -> NodeView:
        entry = self._entry(node_id)

        def change(record: NodeRecord) -> NodeRecord:
            new = record.model_copy(update={"cordoned": True, "draining": True, "cordon_reason": reason})
            if record.state in (NodeState.READY, NodeState.CORDONED):
                new = self._moved(new, NodeState.DRAINING, f"drain: {reason}" if reason else None)
            return new

        await self._mutate(entry, change)
        self._send(entry, NodeCommand(CommandKind.DRAIN, reason))
        return entry.view()

    # -- liveness monitor ----------------------------------------------------------------------

    async def check(self) -> list[tuple[str, NodeState, NodeState]]:
        """One pass of the liveness monitor; returns the transitions it made."""
        now = self._clock()
        made: list[tuple[str, NodeState, NodeState]] = []
        leader = self._is_leader()
        self._next_check = math.inf
        for node_id, entry in list(self._entries.items()):
            state = entry.record.state
            silence = now - entry.last_seen if entry.last_seen is not None else None
            if silence is None and state is not NodeState.LOST:
                if leader and not self._presence.holds(node_id):
                    silence = now - self._absent_since.setdefault(node_id, now)
                else:
                    self._absent_since.pop(node_id, None)
            due = entry.phase.suspect_at(self.timing.suspect_after_missed) if entry.phase else None
            if due is not None and entry.last_seen is not None and is_beating(state) and due > now:
                self._next_check = min(self._next_check, due)
            target = liveness_target(
                state, silence, self.timing.suspect_after_s, self.timing.lost_after_s,
                drained=state is NodeState.DRAINING and self._workloads(node_id) == 0,
                overdue=(now > due) if due is not None and entry.last_seen is not None else None,
            )  # fmt: skip
            if target is None:
                continue
            silent = silence is not None and target in (NodeState.SUSPECT, NodeState.LOST)
            reason = f"no heartbeat for {silence:.1f}s" if silent else None

            def change(
                record: NodeRecord,
                target: NodeState = target,
                reason: str | None = reason,
                seen: NodeState = state,
            ) -> NodeRecord:
                # Re-check under the lock: a beat may have arrived while we waited.
                if record.state is not seen:
                    return record
                return self._moved(record, target, reason)

            try:
                await self._mutate(entry, change)
            except Exception as exc:
                self.metrics.store_errors.labels("transition").inc()
                log.error("node.transition_failed", node=node_id, target=target.value, error=str(exc))
                continue
            if entry.record.state is target:
                made.append((node_id, state, target))
                if target is NodeState.LOST:
                    entry.last_seen, entry.phase = None, None
                    entry.telemetry = ()
                    self._absent_since.pop(node_id, None)
        return made

    def _count(self, record: NodeRecord, sign: int) -> None:
        """Add (+1) or remove (-1) one record's share of the node and device gauges: O(devices),
        so a registration or transition never rescans the fleet."""
        vendor = record.registration.vendor.value
        self.metrics.nodes.labels(vendor, record.state.value).inc(sign)
        for device in record.registration.devices:
            health = record.device_health.get(device.index, (device.health, ""))[0]
            self.metrics.devices.labels(vendor, health.value).inc(sign)
