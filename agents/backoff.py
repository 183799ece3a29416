"""Jittered exponential backoff for reconnects.

"Equal jitter": the n-th wait is ``d/2 + uniform(0, d/2)`` with ``d = min(cap, base * 2**n)``, so
a thousand agents that lost the same control plane spread their reconnects over the window
instead of arriving together, and no wait is shorter than half the nominal delay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base_s: float = 0.2
    cap_s: float = 5.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        nominal = min(self.cap_s, self.base_s * 2.0**self.attempt)
        self.attempt = min(self.attempt + 1, 30)
        return nominal / 2 + self.rng.uniform(0, nominal / 2)

    def reset(self) -> None:
        self.attempt = 0
