from __future__ import annotations

import random

from agents.backoff import Backoff


def test_backoff_grows_jittered_and_capped() -> None:
    backoff = Backoff(base_s=0.2, cap_s=5.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    nominal = [min(5.0, 0.2 * 2**n) for n in range(12)]
    for delay, cap in zip(delays, nominal, strict=True):
        assert cap / 2 <= delay <= cap
    assert max(delays) <= 5.0
    assert delays[-1] >= 2.5
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jitter, not a constant at the cap
    backoff.reset()
    assert backoff.next_delay() <= 0.2


def test_agents_spread_out() -> None:
    firsts = [Backoff(rng=random.Random(seed)).next_delay() for seed in range(200)]
    assert max(firsts) - min(firsts) > 0.05
