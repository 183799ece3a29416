"""The simulation benchmark's names and fixed setup, apart from the simulator: the CLI reads them
to build its options, and every `tokenfab` process builds the CLI."""

from __future__ import annotations

from dataclasses import dataclass

POLICY_NAMES = (
    "tokenfab", "ray_serve", "aibrix_apa", "kpa", "static_peak", "oracle", "oracle_late", "oracle_late_hold",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Defaults:
    """The benchmark's fixed setup (one configuration for every trace and policy)."""

    model: str = "qwen2.5-72b-instruct"
    fleet: str = "910C:autox8"  # nodes sized from the trace (fleet_replicas)
    ttft_s: float = 3.0
    tpot_s: float = 0.1
    cold_start_s: float = 60.0
