"""Leader election through etcd: one control-plane instance leads (reconciles, autoscales, runs
the operator); the others serve reads and writes through etcd and wait.

The leader holds ``/tokenfab/v1/leader`` (who, since when) attached to an etcd lease of
``ttl_s`` (default 5 s), created only if absent (a transaction on ``create_revision == 0``), and
refreshes the lease every ``ttl_s / 3``. Fencing by time: :meth:`Election.is_leader` is true only
until ``last successful refresh + ttl_s - margin_s``, so an instance cut off from etcd stops
acting before its lease can expire and a successor can be elected: two leaders never act at
once as long as clocks run at the same rate (no synchronisation needed: each side measures its
own intervals). A refresh that finds the lease gone steps down at once. The others try to take
the key every ``ttl_s / 3``; a stopping leader revokes its lease, so a planned handover takes one
retry interval, not a TTL.

Fencing by etcd: time alone cannot stop a leader that was *paused* (SIGSTOP, a VM freeze, a long
GC) in the middle of a reconcile pass, after it checked ``is_leader`` and before it wrote; its
lease expires, a successor is elected, and the old one wakes up mid-pass. So every term is also a
:class:`~controlplane.store.base.Fence`: the leader key's create revision, which only this term
has (a successor creates the key anew). The leader's writes go through a
:class:`~controlplane.store.fenced.FencedStore`, which adds the fence to each write's etcd
transaction: a stale leader's write changes nothing, however late it lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from controlplane.errors import retry_delay
from controlplane.store import keys
from controlplane.store.base import Fence, LeaseExpired, Store
from tokenfab.logs import get_logger

log = get_logger("election")


@dataclass
class Election:
    store: Store
    identity: str  # this instance: host:port or pod name
    ttl_s: int = 5
    margin_s: float = 1.0  # stop acting this long before the lease could expire
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[bool], None] = lambda leading: None
    terms: int = 0  # how many times this instance became leader
    _lease: int = 0
    _created: int = 0  # the leader key's create revision in this term: the fence
    _valid_until: float = -math.inf
    _stopping: bool = False
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def is_leader(self) -> bool:
        return self._lease != 0 and self.clock() < self._valid_until

    def fence(self) -> Fence | None:
        """This term's fence while leading (None otherwise): writes under it fail once another
        instance holds the leader key, even if this one has not noticed yet."""
        return Fence(keys.LEADER, self._created) if self.is_leader() else None

    async def leader(self) -> dict[str, str] | None:
        kv = await self.store.get(keys.LEADER)
        return json.loads(kv.value) if kv is not None else None

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="election")

    def abandon(self) -> None:
        """Stop taking part without releasing anything, as a crashed process would: the loop
        ends, the lease is neither refreshed nor revoked, and :meth:`is_leader` turns False once
        this instance's own margin says the lease may have expired (fault drills, tests)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # bounded: on Python 3.11 a cancel that races an inner wait's completion can be lost;
            # the loop also checks _stopping, so it ends within one retry interval either way
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), self.ttl_s)
            self._task = None
        if self._lease:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.revoke_lease(self._lease), 2.0)
            self._step_down("stopping")

    def _step_down(self, why: str) -> None:
        was = self.is_leader()
        self._lease, self._valid_until = 0, -math.inf
        if was:
            log.warning("election.stepped_down", identity=self.identity, reason=why)
            self.on_change(False)

    async def try_acquire(self) -> bool:
        started = self.clock()
        lease = await self.store.grant_lease(self.ttl_s)
        value = json.dumps({"identity": self.identity, "since": datetime.now(UTC).isoformat()}).encode()
        created = await self.store.compare_and_put(keys.LEADER, value, expected_mod_revision=0, lease=lease)
        if created is None:
            await self.store.revoke_lease(lease)
            return False
        self._lease, self._created = lease, created
        self._valid_until = started + self.ttl_s - self.margin_s
        self.terms += 1
        log.info("election.leader", identity=self.identity, term=self.terms, ttl_s=self.ttl_s)
        self.on_change(True)
        return True

    async def refresh(self) -> None:
        started = self.clock()
        await self.store.refresh_lease(self._lease)
        self._valid_until = started + self.ttl_s - self.margin_s

    async def _run(self) -> None:
        interval = self.ttl_s / 3
        while not self._stopping:
            try:
                async with asyncio.timeout(interval):
                    if self._lease:
                        await self.refresh()
                    else:
                        await self.try_acquire()
            except asyncio.CancelledError:
                raise
            except LeaseExpired:
                self._step_down("lease expired")
            except Exception as exc:  # etcd unreachable, or anything else: the loop outlives it
                if retry_delay(exc, default=interval) is None:  # not etcd being away: say so
                    log.warning("election.error", identity=self.identity, error=repr(exc))
                if self._lease and self.clock() >= self._valid_until:
                    self._step_down(f"etcd unreachable: {exc or type(exc).__name__}")
            await asyncio.sleep(interval)
