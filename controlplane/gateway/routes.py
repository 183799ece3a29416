"""What the gateway may route to: each tenant's models, and the Ready replicas serving them.

A *lane* is one tenant's model: the tenant's active capacity requests for that model (usually
one) and the replicas of those requests that are Ready with an endpoint. Starting, Draining,
Failed and Stopped replicas (a fenced replica is a terminal one) are never in a lane: a Draining
replica finishes what it has but gets nothing new. The lane's reservation is the sum of its
requests' reserved output tokens/s, its queue deadline the tightest TTFT target among them.

:func:`build` is pure; :class:`RouteWatch` keeps the table current by following the capacity
requests and the replica records in the store (one resumable watch each, see
:mod:`controlplane.store.follow`), never by polling, and rebuilds the table after each change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from controlplane.domain.capacity import CapacityRecord
from controlplane.domain.replicas import ReplicaRecord, ReplicaState
from controlplane.store import keys
from controlplane.store.base import Store, WatchEvent, WatchEventKind
from controlplane.store.follow import follow
from tokenfab.logs import get_logger

log = get_logger("gateway.routes")


@dataclass(frozen=True, slots=True)
class Backend:
    replica_id: str
    request_id: str
    endpoint: str
    capacity_tps: float  # predicted output tokens/s, calibration included
    accelerator: str
    input_tps: float = 0.0  # predicted prompt tokens/s at the request's mix (0: not known)


@dataclass(frozen=True, slots=True)
class Lane:
    tenant: str
    model: str
    requests: tuple[str, ...]
    reserved_tps: float
    ttft_budget_s: float
    scale_to_zero: bool
    backends: tuple[Backend, ...]
    call_s: float = 8.0  # an average call's duration at the SLO (TPOT target x mean output tokens)

    @property
    def capacity_tps(self) -> float:
        return sum(b.capacity_tps for b in self.backends)

    @property
    def prompt_weight(self) -> float:
        """Output tokens one prompt token is worth on the lane's replicas: their predicted output
        over prompt tokens/s at the request's mix (a prompt as long as the mix's costs as much
        replica time as its output); 1 when the records carry no prompt rate."""
        known = [b for b in self.backends if b.input_tps > 0 and b.capacity_tps > 0]
        if not known:
            return 1.0
        return sum(b.capacity_tps for b in known) / sum(b.input_tps for b in known)

    def work(self, prompt_tokens: int, max_tokens: int) -> float:
        """A call's load on a replica in output-equivalent tokens (the router's unit)."""
        return max_tokens + prompt_tokens * self.prompt_weight


LaneKey = tuple[str, str]  # (tenant, model)
M = TypeVar("M", bound=BaseModel)


def build(requests: Iterable[CapacityRecord], replicas: Iterable[ReplicaRecord]) -> dict[LaneKey, Lane]:
    """The lanes of every tenant. Purely computational."""
    by_request: dict[str, list[Backend]] = {}
    for r in replicas:
        if r.state is ReplicaState.READY and r.endpoint:
            by_request.setdefault(r.request_id, []).append(
                Backend(
                    r.id,
                    r.request_id,
                    r.endpoint,
                    r.predicted_output_tokens_per_second,
                    r.accelerator,
                    r.predicted_input_tokens_per_second,
                )
            )
    grouped: dict[LaneKey, list[CapacityRecord]] = {}
    for record in requests:
        if record.active:
            grouped.setdefault((record.tenant, record.spec.model), []).append(record)
    lanes = {}
    for (tenant, model), records in grouped.items():
        records.sort(key=lambda c: c.id)
        backends = tuple(
            sorted((b for c in records for b in by_request.get(c.id, [])), key=lambda b: b.replica_id)
        )
        lanes[(tenant, model)] = Lane(
            tenant=tenant,
            model=model,
            requests=tuple(c.id for c in records),
            reserved_tps=sum(c.spec.output_tokens_per_second for c in records),
            ttft_budget_s=min(c.spec.latency.ttft_p95_ms for c in records) / 1000.0,
            scale_to_zero=any(c.spec.autoscaling.scale_to_zero for c in records),
            backends=backends,
            call_s=min(c.spec.latency.tpot_p95_ms / 1000.0 * c.spec.mean_output_tokens for c in records),
        )
    return lanes


class RouteWatch:
    """The live lane table. ``await start()`` lists and starts following; ``lanes`` is then
    current to within the watch's delay; ``on_change`` is called after every rebuild."""

    def __init__(self, store: Store, *, on_change: Callable[[dict[LaneKey, Lane]], None] = lambda _: None):
        self._store = store
        self._on_change = on_change
        self._requests: dict[str, CapacityRecord] = {}
        self._replicas: dict[str, ReplicaRecord] = {}
        self.lanes: dict[LaneKey, Lane] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def lane(self, tenant: str, model: str) -> Lane | None:
        return self.lanes.get((tenant, model))

    def models(self, tenant: str) -> list[Lane]:
        return sorted(
            (lane for (t, _), lane in self.lanes.items() if t == tenant), key=lambda lane: lane.model
        )

    async def start(self) -> None:
        requests_rev = await self._load_requests()
        replicas_rev = await self._load_replicas()
        self._rebuild()
        self._tasks = [
            asyncio.create_task(
                follow(
                    self._store, keys.CAPACITY_REQUESTS, self._on_request, start_revision=requests_rev + 1,
                    resync=self._load_requests, what="capacity requests (gateway)",
                ),
                name="gateway-requests",
            ),
            asyncio.create_task(
                follow(
                    self._store, keys.REPLICAS, self._on_replica, start_revision=replicas_rev + 1,
                    resync=self._load_replicas, what="replicas (gateway)",
                ),
                name="gateway-replicas",
            ),
        ]  # fmt: skip

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def _load_requests(self) -> int:
        kvs, revision = await self._store.list_prefix(keys.CAPACITY_REQUESTS)
        self._requests = {}
        for kv in kvs:
            self._put(self._requests, CapacityRecord, kv.key, kv.value)
        self._rebuild()
        return revision

    async def _load_replicas(self) -> int:
        kvs, revision = await self._store.list_prefix(keys.REPLICAS)
        self._replicas = {}
        for kv in kvs:
            self._put(self._replicas, ReplicaRecord, kv.key, kv.value)
        self._rebuild()
        return revision

    @staticmethod
    def _put(into: dict[str, M], model: type[M], key: str, value: bytes) -> None:
        try:
            into[key] = model.model_validate_json(value)
        except ValidationError as exc:  # one bad record never hides the others
            into.pop(key, None)
            log.warning("gateway.bad_record", key=key, error=str(exc.errors(include_url=False)[0]["msg"]))

    def _apply(self, into: dict[str, M], model: type[M], event: WatchEvent) -> None:
        if event.kind is WatchEventKind.DELETE:
            into.pop(event.key, None)
        else:
            self._put(into, model, event.key, event.value)
        self._rebuild()

    def _on_request(self, event: WatchEvent) -> None:
        self._apply(self._requests, CapacityRecord, event)

    def _on_replica(self, event: WatchEvent) -> None:
        self._apply(self._replicas, ReplicaRecord, event)

    def _rebuild(self) -> None:
        self.lanes = build(self._requests.values(), self._replicas.values())
        self._on_change(self.lanes)
