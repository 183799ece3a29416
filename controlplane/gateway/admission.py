"""Admission: each lane's (tenant, model) token rate against its reservation.

Each lane has a token bucket filled at its reserved output tokens/s (this instance's share of
them, when several gateway instances serve the lane: :mod:`controlplane.gateway.share`), holding
at most ``burst_s`` seconds of it. A call costs its ``max_tokens`` (output the reservation is
sized for); when a guaranteed call ends the bucket is trued up to the completion tokens the
replica reported (:meth:`Admission.settle`), so sustained traffic is accounted in tokens served:

1. the bucket holds the call's cost (or a whole burst, for calls larger than a burst): admitted
   as **guaranteed**; the bucket pays (and may go into debt for a large call);
2. otherwise, while the lane's replicas have spare capacity (the output tokens still to produce
   for the calls in flight, in seconds at their predicted rate, stay under the spare horizon with
   this call): admitted as **best effort**, free of the bucket. The horizon is, unless set, the
   duration of an average call at the SLO (TPOT target x mean output tokens): a replica at its
   predicted rate with that much work queued is about full (Little's law);
3. otherwise the call **queues** until the bucket refills or capacity frees up, at most until its
   deadline (the lane's TTFT target); a call whose wait would pass the deadline is refused at once
   with 429 and ``Retry-After`` (the seconds the bucket needs), a queued call whose deadline
   passes is refused the same way.

A lane with no Ready replica (scaled to zero, or every replica gone) queues calls up to
``cold_start_wait_s`` for one to appear, which is what lets a first arrival wake a request.

:func:`decide` is pure (time is an argument); :class:`Admission` is the asyncio side: waiting
callers wake when a call ends or the lane table changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from controlplane.gateway.routes import Lane, LaneKey
from tokenfab.errors import TemporaryError


class Verdict(StrEnum):
    GUARANTEED = "guaranteed"
    BEST_EFFORT = "best_effort"
    QUEUE = "queue"
    REJECT = "reject"


class RateLimited(TemporaryError):
    """429: over the reservation with no spare capacity, past the call's queue deadline; the
    client may try again after ``retry_after_s`` (whole seconds, at least 1: the Retry-After)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(message, delay=float(self.retry_after_s))


class NoReplica(TemporaryError):
    """503: the lane had no Ready replica within the cold-start bound."""


@dataclass
class TokenBucket:
    rate: float  # tokens/s
    burst: float  # tokens
    tokens: float
    stamp: float

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def need(self, cost: float) -> float:
        return min(cost, self.burst)

    def wait_s(self, cost: float) -> float:
        """Seconds until the bucket holds ``cost`` (capped at a burst); inf with no rate."""
        missing = self.need(cost) - self.tokens
        if missing <= 0:
            return 0.0
        return missing / self.rate if self.rate > 0 else math.inf


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    wait_s: float = 0.0  # QUEUE and REJECT: how long the bucket needs


def decide(
    bucket: TokenBucket,
    cost: float,
    *,
    queued_s: float,
    capacity_tps: float,
    spare_horizon_s: float,
    remaining_s: float,
) -> Decision:
    """One admission decision for a call of ``cost`` tokens. ``queued_s``: seconds of work already
    outstanding on the lane's replicas; ``remaining_s``: time left before the call's deadline.
    Purely computational (the bucket must be refilled to now first)."""  # fmt: skip
    if bucket.tokens >= bucket.need(cost):
        return Decision(Verdict.GUARANTEED)
    if capacity_tps > 0 and queued_s + cost / capacity_tps <= spare_horizon_s:
        return Decision(Verdict.BEST_EFFORT)
    wait = bucket.wait_s(cost)
    if wait > remaining_s:
        return Decision(Verdict.REJECT, wait)
    return Decision(Verdict.QUEUE, wait)


@dataclass
class Settings:
    burst_s: float = 2.0
    spare_horizon_s: float | None = None  # None: each lane's average call duration at the SLO
    cold_start_wait_s: float = 60.0


class Admission:
    """Per-lane buckets and queues. ``outstanding(lane)`` gives the output tokens in flight on the
    lane's replicas (the proxy's accounting)."""

    def __init__(
        self,
        outstanding: Callable[[Lane], float],
        *,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.monotonic,
        share: Callable[[Lane], float] = lambda lane: 1.0,
    ) -> None:
        self.settings = settings or Settings()
        self._outstanding = outstanding
        self._share = share
        self._clock = clock
        self._buckets: dict[LaneKey, TokenBucket] = {}
        self._changed = asyncio.Condition()
        self.waiting: dict[LaneKey, int] = {}

    def bucket(self, lane: Lane) -> TokenBucket:
        """The lane's bucket, refilled to now, at this instance's share of the reservation."""
        key = (lane.tenant, lane.model)
        now = self._clock()
        bucket = self._buckets.get(key)
        rate = lane.reserved_tps * self._share(lane)
        burst = max(rate * self.settings.burst_s, 1.0)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, burst, burst, now)
        elif bucket.rate != rate:  # the reservation or this instance's share of it changed
            bucket.refill(now)
            bucket.rate, bucket.burst = rate, burst
            bucket.tokens = min(bucket.tokens, burst)
        bucket.refill(now)
        return bucket

    def settle(self, lane: Lane, charged: float, used: float) -> None:
        """True-up of a guaranteed call that ended: it was charged ``charged`` tokens (its
        ``max_tokens``) at admission and the replica reported ``used``; the bucket gets the
        difference back (or pays more), so sustained traffic is accounted in the tokens served."""
        bucket = self._buckets.get((lane.tenant, lane.model))
        if bucket is None:
            return
        bucket.refill(self._clock())
        bucket.tokens = min(bucket.burst, bucket.tokens + charged - used)

    async def notify(self) -> None:
        """Something changed (a call ended, the lanes moved): queued callers look again."""
        if not any(self.waiting.values()):
            return
        async with self._changed:
            self._changed.notify_all()

    async def admit(self, lanes: Callable[[], Lane | None], cost: float) -> Verdict:
        """Wait for admission of a call costing ``cost`` on the lane ``lanes()`` returns (looked
        up again after every wake, since replicas come and go). Raises RateLimited or NoReplica."""
        lane = lanes()
        assert lane is not None
        key = (lane.tenant, lane.model)
        start = self._clock()
        rate_deadline = start + lane.ttft_budget_s
        cold_deadline = start + self.settings.cold_start_wait_s
        queued = False
        try:
            while True:
                lane = lanes()
                now = self._clock()
                if lane is None:
                    raise NoReplica("the capacity request was cancelled")
                if not lane.backends:
                    if now >= cold_deadline:
                        wait = self.settings.cold_start_wait_s
                        raise NoReplica(f"model {lane.model!r}: no Ready replica after {wait:g} s")
                    timeout = cold_deadline - now
                else:
                    capacity = lane.capacity_tps
                    d = decide(
                        self.bucket(lane), cost,
                        queued_s=self._outstanding(lane) / capacity if capacity > 0 else math.inf,
                        capacity_tps=capacity,
                        spare_horizon_s=lane.call_s if self.settings.spare_horizon_s is None
                        else self.settings.spare_horizon_s,
                        remaining_s=rate_deadline - now,
                    )  # fmt: skip
                    if d.verdict is Verdict.GUARANTEED:
                        bucket = self._buckets[key]
                        bucket.tokens -= cost
                        return d.verdict
                    if d.verdict is Verdict.BEST_EFFORT:
                        return d.verdict
                    if d.verdict is Verdict.REJECT:
                        raise RateLimited(
                            f"model {lane.model!r}: over the reserved {lane.reserved_tps:g} output tokens/s "
                            "and no spare capacity",
                            d.wait_s,
                        )
                    timeout = min(d.wait_s, rate_deadline - now)
                if not queued:
                    queued = True
                    self.waiting[key] = self.waiting.get(key, 0) + 1
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), max(timeout, 0.001))
        finally:
            if queued:
                self.waiting[key] -= 1
