"""Synthetic demand for the demo: keeps requests in flight against every Ready replica's
OpenAI-compatible endpoint, so the live view shows real tokens/s coming out of the engines.

Per replica, ``concurrency`` workers each loop: send ``POST /v1/completions`` with a prompt of
token ids (length drawn from a log-normal around ``mean_input_tokens``) and ``max_tokens`` drawn
the same way around ``mean_output_tokens``, wait for the answer, repeat. Parameters are made up
for the demo (chat-like shapes), not taken from any trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from controlplane.executor import httpio
from tokenfab.logs import get_logger

log = get_logger("loadgen")


@dataclass
class LoadGenerator:
    endpoints: Callable[[], Awaitable[dict[str, str]]]  # replica id -> endpoint, for Ready replicas
    concurrency: int = 24
    mean_input_tokens: float = 600.0
    mean_output_tokens: float = 160.0
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    completed: int = 0
    errors: int = 0
    _workers: dict[str, list[asyncio.Task[None]]] = field(default_factory=dict)

    def _length(self, mean: float) -> int:
        sigma = 0.6
        return max(1, min(8192, int(self.rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma))))

    async def _worker(self, endpoint: str) -> None:
        url = endpoint + "/v1/completions"
        while True:
            payload = {
                "model": "demo",
                "prompt": [1] * self._length(self.mean_input_tokens),
                "max_tokens": self._length(self.mean_output_tokens),
            }
            try:
                reply = await httpio.request("POST", url, payload, timeout_s=120.0)
            except (OSError, TimeoutError):
                self.errors += 1
                await asyncio.sleep(1.0)
                continue
            if reply.status == 200:
                self.completed += 1
            else:
                self.errors += 1
                await asyncio.sleep(1.0)

    async def run(self, stop: asyncio.Event, interval_s: float = 2.0) -> None:
        try:
            while not stop.is_set():
                try:
                    wanted = await self.endpoints()
                except Exception as exc:
                    log.warning("loadgen.endpoints_failed", error=str(exc))
                    wanted = {k: "" for k in self._workers}
                for replica in set(self._workers) - {k for k, v in wanted.items() if v}:
                    for task in self._workers.pop(replica):
                        task.cancel()
                for replica, endpoint in wanted.items():
                    if endpoint and replica not in self._workers:
                        self._workers[replica] = [
                            asyncio.create_task(self._worker(endpoint)) for _ in range(self.concurrency)
                        ]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
        finally:
            tasks = [t for group in self._workers.values() for t in group]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._workers.clear()
