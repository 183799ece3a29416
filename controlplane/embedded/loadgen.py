"""Synthetic demand for the demo: open-loop arrivals whose rate rises and falls, with short bursts,
sent through the gateway (the tenant's one OpenAI-compatible endpoint, with its bearer token), so
the autoscaler has something to follow and the gateway's routing, admission and metering work.

Open loop (arrivals do not wait for answers), the way users arrive: Poisson arrivals at a rate
that follows :class:`DemandShape` in output tokens/s (a slow cycle between ``low`` and ``high``
with ramps, plus a burst of ``burst_factor`` x for ``burst_s`` every ``burst_every_s``). Prompt
and output lengths are log-normal around chat-like means; prompts are random token ids (no two
share a prefix, so the replicas' prefix caches do not flatter the demo). Each call is ``POST
<gateway>/completions``; the gateway picks the replica. Answers are counted by outcome: completed,
refused by admission (429), errors. All parameters are made up for the demo, not taken from any
trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field

import aiohttp

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
    url: str  # the gateway's base URL (".../v1")
    token: str  # the tenant's bearer token
    model: str
    shape: DemandShape = field(default_factory=DemandShape)
    mean_input_tokens: float = 600.0
    mean_output_tokens: float = 160.0
    max_in_flight: int = 800  # beyond this, arrivals are shed (counted), to protect the laptop
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    completed: int = 0
    errors: int = 0
    rejected: int = 0  # 429 from the gateway's admission (and 503: no replica yet)
    shed: int = 0
    offered_tps: float = 0.0  # the shape's current output tokens/s
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def _length(self, mean: float) -> int:
        sigma = 0.6
        return max(1, min(8192, int(self.rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma))))

    async def _send(self, session: aiohttp.ClientSession, prompt: int, max_tokens: int) -> None:
        body = {"model": self.model, "prompt": [self.rng.randrange(1, 32000) for _ in range(prompt)],
                "max_tokens": max_tokens}  # fmt: skip
        try:
            async with session.post(self.url + "/completions", json=body) as reply:
                await reply.read()
                if reply.status == 200:
                    self.completed += 1
                elif reply.status in (429, 503):
                    self.rejected += 1
                else:
                    self.errors += 1
        except (aiohttp.ClientError, OSError, TimeoutError):
            self.errors += 1

    async def run(self, stop: asyncio.Event) -> None:
        started = time.monotonic()
        session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=aiohttp.ClientTimeout(total=300.0),
            connector=aiohttp.TCPConnector(limit=0),
        )
        try:
            while not stop.is_set():
                self.offered_tps = self.shape.rate(time.monotonic() - started)
                per_s = self.offered_tps / self.mean_output_tokens
                gap = self.rng.expovariate(per_s) if per_s > 0 else 1.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(gap, 1.0))
                if stop.is_set() or gap > 1.0:
                    continue
                if len(self._tasks) >= self.max_in_flight:
                    self.shed += 1
                    continue
                task = asyncio.create_task(
                    self._send(
                        session, self._length(self.mean_input_tokens), self._length(self.mean_output_tokens)
                    )
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()
