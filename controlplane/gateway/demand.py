"""Demand signals: what tenants offer each capacity request, published for the autoscaler.

The gateway sees demand before admission: every arrival (with its prompt tokens and
``max_tokens``), every refusal, every call queued and for how long, and the completion tokens of
the calls it finished. :class:`DemandMeter` keeps them over a sliding ``window_s`` per lane, and
publishes one :class:`~controlplane.domain.demand.GatewayDemand` per capacity request every
``publish_s`` under ``/tokenfab/v1/gateway/demand/<request id>/<instance>`` on an etcd lease of
``ttl_s`` (a dead gateway's figures vanish with it). A lane serving several requests of one
tenant splits its figures evenly among them.

Offered output tokens/s are arrivals/s times the mean completion of the calls finished in the
window (capped by their mean ``max_tokens``; the mean ``max_tokens`` before any finished), so a
refused or queued call counts as the demand it is, not as zero. Offered prompt tokens/s are in
tokens, not characters: a text prompt's count at arrival is an estimate (4 characters a token, no
tokenizer offline), so the arrivals' estimates are scaled by the ratio of the prompt tokens the
replicas reported to the estimates of the same calls, over the calls finished in the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import count

from controlplane.domain.demand import GatewayDemand
from controlplane.gateway.routes import Lane, LaneKey
from controlplane.store import keys
from controlplane.store.base import LeaseExpired, Store
from tokenfab.logs import get_logger

log = get_logger("gateway.demand")


class _LaneDemand:
    def __init__(self) -> None:
        self.arrivals: deque[tuple[float, int, int]] = deque()  # (t, prompt tokens, max_tokens)
        self.finished: deque[tuple[float, int]] = deque()  # (t, completion tokens)
        self.prompts: deque[tuple[float, int, int]] = deque()  # (t, estimated, reported prompt tokens)
        self.rejected: deque[float] = deque()
        self.waiting: dict[int, float] = {}  # ticket -> since

    def trim(self, horizon: float) -> None:
        while self.arrivals and self.arrivals[0][0] < horizon:
            self.arrivals.popleft()
        while self.finished and self.finished[0][0] < horizon:
            self.finished.popleft()
        while self.prompts and self.prompts[0][0] < horizon:
            self.prompts.popleft()
        while self.rejected and self.rejected[0] < horizon:
            self.rejected.popleft()

    def prompt_ratio(self) -> float:
        """Reported over estimated prompt tokens of the calls finished in the window (1: none)."""
        estimated = sum(p[1] for p in self.prompts)
        return sum(p[2] for p in self.prompts) / estimated if estimated > 0 else 1.0


class DemandMeter:
    def __init__(
        self,
        store: Store,
        instance: str,
        *,
        window_s: float = 30.0,
        publish_s: float = 2.0,
        ttl_s: int = 10,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self.instance = instance
        self.window_s = window_s
        self._publish_s = publish_s
        self._ttl_s = ttl_s
        self._clock = clock
        self._wall = wall
        self._lanes: dict[LaneKey, _LaneDemand] = {}
        self._tickets = count()
        self._task: asyncio.Task[None] | None = None
        self._lease = 0
        self._published: set[str] = set()
        self.lanes: Callable[[], dict[LaneKey, Lane]] = dict

    def _of(self, lane: Lane) -> _LaneDemand:
        return self._lanes.setdefault((lane.tenant, lane.model), _LaneDemand())

    def arrival(self, lane: Lane, prompt_tokens: int, max_tokens: int) -> None:
        self._of(lane).arrivals.append((self._clock(), prompt_tokens, max_tokens))

    def finished(self, lane: Lane, completion_tokens: int, prompt: tuple[int, int] | None = None) -> None:
        """A call ended with ``completion_tokens``; ``prompt``: its (estimated, reported) prompt
        tokens when the replica reported its usage."""
        d, now = self._of(lane), self._clock()
        d.finished.append((now, completion_tokens))
        if prompt is not None and prompt[0] > 0 and prompt[1] > 0:
            d.prompts.append((now, *prompt))

    def rejected(self, lane: Lane) -> None:
        self._of(lane).rejected.append(self._clock())

    def enqueue(self, lane: Lane) -> int:
        ticket = next(self._tickets)
        self._of(lane).waiting[ticket] = self._clock()
        return ticket

    def dequeue(self, lane: Lane, ticket: int) -> None:
        self._of(lane).waiting.pop(ticket, None)

    def snapshot(self, lanes: dict[LaneKey, Lane]) -> list[GatewayDemand]:
        """One record per capacity request of the given lanes (zeros for idle ones)."""
        now, at = self._clock(), self._wall()
        out = []
        for key, lane in lanes.items():
            d = self._lanes.get(key) or _LaneDemand()
            d.trim(now - self.window_s)
            span = self.window_s
            n = len(d.arrivals)
            mean_max = sum(a[2] for a in d.arrivals) / n if n else 0.0
            done = [f[1] for f in d.finished]
            mean_out = min(sum(done) / len(done), mean_max or float("inf")) if done else mean_max
            share = 1.0 / max(1, len(lane.requests))
            prompt_ratio, prompts = d.prompt_ratio(), sum(a[1] for a in d.arrivals)
            waits = [now - since for since in d.waiting.values()]
            for request_id in lane.requests:
                out.append(
                    GatewayDemand(
                        request_id=request_id, instance=self.instance, at=at, window_s=span,
                        offered_requests_per_second=share * n / span,
                        offered_input_tokens_per_second=share * prompt_ratio * prompts / span,
                        offered_output_tokens_per_second=share * n * mean_out / span,
                        served_output_tokens_per_second=share * sum(done) / span,
                        rejected_per_second=share * len(d.rejected) / span,
                        queued=round(share * len(waits)) if waits else 0,
                        oldest_wait_s=max(waits, default=0.0),
                    )
                )  # fmt: skip
        return out

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="gateway-demand")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._lease:
            with contextlib.suppress(Exception):
                await self._store.revoke_lease(self._lease)  # our figures go with us

    async def _loop(self) -> None:
        while True:
            try:
                await self.publish()
            except Exception as exc:  # the store is away: try again next round
                log.warning("demand.publish_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(self._publish_s)

    async def publish(self) -> int:
        if not self._lease:
            self._lease = await self._store.grant_lease(self._ttl_s)
        else:
            try:
                await self._store.refresh_lease(self._lease)
            except LeaseExpired:
                self._lease = await self._store.grant_lease(self._ttl_s)
                self._published.clear()
        written = set()
        for record in self.snapshot(self.lanes()):
            key = keys.gateway_demand(record.request_id, self.instance)
            await self._store.put(key, record.model_dump_json().encode(), lease=self._lease)
            written.add(key)
        for gone in self._published - written:
            current = await self._store.get(gone)
            if current is not None:
                await self._store.compare_and_delete(gone, expected_mod_revision=current.mod_revision)
        self._published = written
        return len(written)


async def read_demand(store: Store) -> list[GatewayDemand]:
    """Every instance's published demand (records that do not parse are skipped)."""
    from pydantic import ValidationError

    kvs, _ = await store.list_prefix(keys.GATEWAY_DEMAND)
    out = []
    for kv in kvs:
        with contextlib.suppress(ValidationError):
            out.append(GatewayDemand.model_validate_json(kv.value))
    return out
