"""One reservation across several gateway instances.

Each instance admits against a token bucket (:mod:`controlplane.gateway.admission`). With N
instances behind a Service, a bucket filled at the whole reservation in each would let a tenant
burst N times its reservation before the best-effort rule applies. So each instance fills its
bucket at a *share* of the lane's reserved tokens/s, from what every instance publishes anyway:
its offered demand per capacity request (``/tokenfab/v1/gateway/demand/<request>/<instance>``, on
a lease, so a dead instance drops out within the lease's TTL). :class:`ShareWatch` follows that
prefix (a watch, not polling) and :func:`split` computes the share, purely:

* alone (no other live instance for the lane): the whole reservation;
* otherwise, among the instances with offered demand for the lane (and this one), each weighs
  ``max(its share of the offered demand, 1 / N_live)`` and gets its weight over the sum of those
  weights. The floor of ``1 / N_live`` keeps an instance whose traffic just started (or is light)
  from being starved while its demand shows; normalising keeps the shares of instances that see
  the same records summing to 1, so together they guarantee no more than the reservation. An
  idle instance does not weigh in the others' split (a tenant whose traffic all lands on one
  instance keeps its whole reservation there) and takes the floor for its own first calls: the
  combined guarantee may exceed the reservation by that much until the idle instance's demand
  is published (every ``demand_publish_s``) and the others make room.

The demand figure is the offered output tokens/s (arrivals, admitted or not: a refused call is
demand too), the unit the reservation and the bucket are in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

from pydantic import ValidationError

from controlplane.domain.demand import GatewayDemand
from controlplane.gateway.routes import Lane
from controlplane.store import keys
from controlplane.store.base import Store, WatchEvent, WatchEventKind
from controlplane.store.follow import follow
from tokenfab.logs import get_logger

log = get_logger("gateway.share")


def split(mine: str, demand: Mapping[str, float]) -> float:
    """This instance's (``mine``) share of a lane's reservation, in [0, 1], given the offered
    output tokens/s of every live instance for the lane (``demand``: instance -> tokens/s; an
    instance that published zeros is live and idle). Purely computational."""
    live = set(demand) | {mine}
    if len(live) == 1:
        return 1.0
    floor = 1.0 / len(live)
    total = sum(max(0.0, d) for d in demand.values())
    active = {i for i, d in demand.items() if d > 0} | {mine}
    if total <= 0:
        return floor  # nobody offers anything yet: an even split
    weights = {i: max(max(0.0, demand.get(i, 0.0)) / total, floor) for i in active}
    return weights[mine] / sum(weights.values())


class ShareWatch:
    """The other instances' published demand, followed through the store, and this instance's
    share of each lane. ``on_change`` is called after every change (admission re-reads shares)."""

    def __init__(self, store: Store, instance: str, *, on_change: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self.instance = instance
        self._on_change = on_change
        self._records: dict[str, GatewayDemand] = {}  # key -> record
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        revision = await self._load()
        self._task = asyncio.create_task(
            follow(
                self._store, keys.GATEWAY_DEMAND, self._apply, start_revision=revision + 1, resync=self._load,
                what="gateway demand (shares)",
            ),
            name="gateway-shares",
        )  # fmt: skip

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _load(self) -> int:
        kvs, revision = await self._store.list_prefix(keys.GATEWAY_DEMAND)
        self._records = {}
        for kv in kvs:
            with contextlib.suppress(ValidationError):
                self._records[kv.key] = GatewayDemand.model_validate_json(kv.value)
        self._on_change()
        return revision

    def _apply(self, event: WatchEvent) -> None:
        if event.kind is WatchEventKind.DELETE:
            self._records.pop(event.key, None)
        else:
            try:
                self._records[event.key] = GatewayDemand.model_validate_json(event.value)
            except ValidationError as exc:  # one bad record never hides the others
                self._records.pop(event.key, None)
                log.warning(
                    "share.bad_record", key=event.key, error=str(exc.errors(include_url=False)[0]["msg"])
                )
        self._on_change()

    def demand(self, lane: Lane) -> dict[str, float]:
        """Offered output tokens/s per live instance for the lane's requests."""
        out: dict[str, float] = {}
        requests = set(lane.requests)
        for record in self._records.values():
            if record.request_id in requests:
                out[record.instance] = out.get(record.instance, 0.0) + record.offered_output_tokens_per_second
        return out

    def share(self, lane: Lane) -> float:
        return split(self.instance, self.demand(lane))
