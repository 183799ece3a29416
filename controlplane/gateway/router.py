"""Choosing a replica for one call, across replicas of unequal speed. Purely computational.

Load is *outstanding tokens over capacity*: the tokens of the calls a replica has in flight
(prompt plus the output they may produce) divided by its predicted output tokens/s, that is, the
seconds of work queued on it. A BR100 TP-4 that is twice as fast as a 910C TP-2 takes twice the
work before it looks as busy, so traffic splits in proportion to capacity.

Policies:

* ``least_load``: the replica whose load after taking the call is lowest.
* ``affinity``: consistent hashing of the call's affinity key (a session id, else the prompt's
  prefix) on a ring where each replica owns virtual nodes in proportion to its capacity, so the
  same prefix keeps landing where its KV cache is warm and a replica joining or leaving moves only
  its share of keys. Bounded loads (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with
  Bounded Loads", SODA 2018): walking the ring from the key, the first replica whose load after
  the call stays within ``load_factor`` times the mean load plus ``slack_s`` seconds of work takes
  it; when none does, ``least_load`` decides. The slack keeps a lightly loaded fleet from
  scattering a prefix just because one call is in flight.
* ``random``: capacity-weighted random choice (the benchmark's baseline).

Replicas already tried for this call (``exclude``) are skipped: that is how a retry lands
elsewhere.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from controlplane.gateway.routes import Backend

Policy = Literal["affinity", "least_load", "random"]
VNODES = 64  # virtual nodes of the fastest replica; slower ones get proportionally fewer (>= 4)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Ring:
    points: tuple[int, ...]
    owners: tuple[str, ...]

    @classmethod
    def of(cls, backends: Sequence[Backend]) -> Ring:
        fastest = max((b.capacity_tps for b in backends), default=1.0) or 1.0
        pairs = []
        for b in backends:
            count = max(4, round(VNODES * b.capacity_tps / fastest))
            pairs += [(_hash(f"{b.replica_id}#{i}"), b.replica_id) for i in range(count)]
        pairs.sort()
        return cls(tuple(p for p, _ in pairs), tuple(o for _, o in pairs))

    def walk(self, key: str) -> list[str]:
        """Distinct owners in ring order from ``key``'s position."""
        if not self.points:
            return []
        start = bisect.bisect(self.points, _hash(key))
        seen: dict[str, None] = {}
        n = len(self.points)
        for i in range(n):
            seen.setdefault(self.owners[(start + i) % n], None)
        return list(seen)


@dataclass
class Router:
    policy: Policy = "affinity"
    load_factor: float = 1.25
    slack_s: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    _rings: dict[tuple[tuple[str, float], ...], Ring] = field(default_factory=dict)

    def _ring(self, backends: Sequence[Backend]) -> Ring:
        shape = tuple((b.replica_id, b.capacity_tps) for b in backends)
        ring = self._rings.get(shape)
        if ring is None:
            if len(self._rings) > 256:  # replica sets come and go: keep a bounded cache
                self._rings.clear()
            ring = self._rings[shape] = Ring.of(backends)
        return ring

    def choose(
        self,
        backends: Sequence[Backend],
        outstanding: Mapping[str, float],
        *,
        cost: float,
        affinity: str = "",
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> Backend | None:
        """The replica for a call costing ``cost`` tokens; None when every one is excluded."""
        candidates = [b for b in backends if b.replica_id not in exclude and b.capacity_tps > 0]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        if self.policy == "random":
            return self.rng.choices(candidates, weights=[b.capacity_tps for b in candidates])[0]
        if self.policy == "affinity" and affinity:
            total = sum(outstanding.get(b.replica_id, 0.0) for b in candidates) + cost
            mean = total / sum(b.capacity_tps for b in candidates)
            bound = self.load_factor * mean + self.slack_s
            by_id = {b.replica_id: b for b in candidates}
            for replica_id in self._ring(backends).walk(affinity):
                b = by_id.get(replica_id)
                if b is not None and (outstanding.get(replica_id, 0.0) + cost) / b.capacity_tps <= bound:
                    return b
        return min(
            candidates,
            key=lambda b: ((outstanding.get(b.replica_id, 0.0) + cost) / b.capacity_tps, self.rng.random()),
        )
