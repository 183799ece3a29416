"""Synthetic demand for the demo: open-loop arrivals whose rate rises and falls, with short bursts,
sent to the Ready replicas' OpenAI-compatible endpoints, so the autoscaler has something to follow.

Open loop (arrivals do not wait for answers), the way users arrive: Poisson arrivals at a rate
that follows :class:`DemandShape` in output tokens/s (a slow cycle between ``low`` and ``high``
with ramps, plus a burst of ``burst_factor`` x for ``burst_s`` every ``burst_every_s``). Prompt
and output lengths are log-normal around chat-like means. Each request goes to the Ready replica
with the fewest outstanding tokens per predicted token/s (replicas of different accelerator types
differ by 2-3x), ``POST /v1/completions``. All parameters are made up for the demo, not taken
from any trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from controlplane.executor import httpio
from tokenfab.logs import get_logger

log = get_logger("loadgen")


@dataclass(frozen=True, slots=True)
class DemandShape:
    """Offered output tokens/s over time."""

    low: float = 2000.0
    high: float = 7000.0
    period_s: float = 600.0  # first half low, second half high, ramps of ramp_s between
    ramp_s: float = 30.0
    start_s: float = 180.0  # where in the cycle the demo starts: the first ramp up after 90 s
    burst_every_s: float = 75.0
    burst_s: float = 8.0
    burst_factor: float = 1.6

    def rate(self, t: float) -> float:
        t += self.start_s
        phase = t % self.period_s
        half = self.period_s / 2
        if phase < half - self.ramp_s:
            level = self.low
        elif phase < half:
            level = self.low + (self.high - self.low) * (phase - (half - self.ramp_s)) / self.ramp_s
        elif phase < self.period_s - self.ramp_s:
            level = self.high
        else:
            level = self.high - (self.high - self.low) * (phase - (self.period_s - self.ramp_s)) / self.ramp_s
        if t % self.burst_every_s >= self.burst_every_s - self.burst_s:
            level *= self.burst_factor
        return level


@dataclass
class LoadGenerator:
    # replica id -> (endpoint, predicted output tokens/s), for Ready replicas
    endpoints: Callable[[], Awaitable[dict[str, tuple[str, float]]]]
    shape: DemandShape = field(default_factory=DemandShape)
    mean_input_tokens: float = 600.0
    mean_output_tokens: float = 160.0
    max_in_flight: int = 800  # beyond this, arrivals are shed (counted), to protect the laptop
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    completed: int = 0
    errors: int = 0
    shed: int = 0
    offered_tps: float = 0.0  # the shape's current output tokens/s
    _outstanding: dict[str, int] = field(default_factory=dict)  # replica id -> tokens in flight
    _ready: dict[str, tuple[str, float]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def _length(self, mean: float) -> int:
        sigma = 0.6
        return max(1, min(8192, int(self.rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma))))

    def route(self) -> str | None:
        """The Ready replica with the fewest outstanding tokens per predicted token/s."""
        if not self._ready:
            return None
        return min(self._ready, key=lambda r: (self._outstanding.get(r, 0) / max(self._ready[r][1], 1.0), r))

    async def _send(self, replica: str, prompt: int, max_tokens: int) -> None:
        self._outstanding[replica] = self._outstanding.get(replica, 0) + prompt + max_tokens
        url = self._ready[replica][0] + "/v1/completions"
        try:
            reply = await httpio.request(
                "POST",
                url,
                {"model": "demo", "prompt": [1] * prompt, "max_tokens": max_tokens},
                timeout_s=300.0,
            )
            if reply.status == 200:
                self.completed += 1
            else:
                self.errors += 1
        except (OSError, TimeoutError, ValueError):
            self.errors += 1
        finally:
            self._outstanding[replica] -= prompt + max_tokens
            if self._outstanding[replica] <= 0 and replica not in self._ready:
                self._outstanding.pop(replica, None)

    async def _refresh(self, stop: asyncio.Event, interval_s: float) -> None:
        while not stop.is_set():
            try:
                self._ready = {k: v for k, v in (await self.endpoints()).items() if v[0]}
            except Exception as exc:
                log.warning("loadgen.endpoints_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    async def run(self, stop: asyncio.Event, interval_s: float = 2.0) -> None:
        refresher = asyncio.create_task(self._refresh(stop, interval_s))
        started = time.monotonic()
        try:
            while not stop.is_set():
                self.offered_tps = self.shape.rate(time.monotonic() - started)
                per_s = self.offered_tps / self.mean_output_tokens
                gap = self.rng.expovariate(per_s) if per_s > 0 else 1.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(gap, 1.0))
                if stop.is_set() or gap > 1.0:
                    continue
                replica = self.route()
                if replica is None or len(self._tasks) >= self.max_in_flight:
                    self.shed += 1
                    continue
                task = asyncio.create_task(
                    self._send(
                        replica, self._length(self.mean_input_tokens), self._length(self.mean_output_tokens)
                    )
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            refresher.cancel()
            tasks = [refresher, *self._tasks]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
