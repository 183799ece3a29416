"""What ``tokenfab simulate`` and ``bench/autoscaler.py`` share: fleets, policy names, the run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controlplane.autoscale.baselines import AibrixApaPolicy, KpaPolicy, RayServePolicy, StaticPolicy
from controlplane.autoscale.policy import Policy, TokenfabPolicy
from controlplane.catalog import Catalog
from controlplane.domain.nodes import Vendor
from controlplane.scheduler import NodeSlot
from controlplane.simulate.sim import Scenario, Simulator, peak_replicas
from controlplane.simulate.trace import Trace

POLICY_NAMES = ("tokenfab", "ray_serve", "aibrix_apa", "kpa", "static_peak")


def make_fleet(catalog: Catalog, spec: str) -> tuple[NodeSlot, ...]:
    """``"910B4:8x8,H100:2x8"``: accelerator type, then nodes x devices per node."""
    nodes: list[NodeSlot] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, shape = part.partition(":")
        count, _, devices = shape.partition("x")
        if name not in catalog.accelerators:
            known = ", ".join(sorted(catalog.accelerators))
            raise ValueError(f"fleet: unknown accelerator type {name!r} (known: {known})")
        try:
            n, d = int(count), int(devices)
        except ValueError:
            raise ValueError(f"fleet: {part!r} is not TYPE:NODESxDEVICES, e.g. 910B4:8x8") from None
        if n < 1 or d < 1:
            raise ValueError(f"fleet: {part!r} needs at least one node and one device")
        vendor: Vendor = catalog.accelerators[name].vendor
        nodes.extend(
            NodeSlot(f"{name.lower()}-{i}", "sim", "sim", vendor, name, tuple((j, 0) for j in range(d)))
            for i in range(n)
        )
    if not nodes:
        raise ValueError("fleet: no nodes")
    return tuple(nodes)


def make_policy(name: str, simulator: Simulator, trace: Trace) -> Policy:
    factories: dict[str, Callable[[], Policy]] = {
        "tokenfab": TokenfabPolicy,
        "ray_serve": RayServePolicy,
        "aibrix_apa": AibrixApaPolicy,
        "kpa": KpaPolicy,
        "static_peak": lambda: StaticPolicy(peak_replicas(trace, simulator.declared)),
    }
    if name not in factories:
        raise ValueError(f"policy: unknown policy {name!r} (known: {', '.join(POLICY_NAMES)})")
    return factories[name]()


@dataclass(frozen=True, slots=True)
class Defaults:
    """The benchmark's fixed setup (one configuration for every trace and policy)."""

    model: str = "qwen2.5-72b-instruct"
    fleet: str = "910C:8x8"
    ttft_s: float = 3.0
    tpot_s: float = 0.1
    cold_start_s: float = 60.0


def scenario_for(
    trace: Trace,
    catalog: Catalog,
    *,
    model: str,
    fleet: str,
    ttft_s: float,
    tpot_s: float,
    cold_start_s: float,
    tick_s: float = 5.0,
    min_replicas: int = 1,
) -> Scenario:
    n = max(1, len(trace.requests))
    return Scenario(
        model=model,
        nodes=make_fleet(catalog, fleet),
        ttft_target_s=ttft_s,
        tpot_target_s=tpot_s,
        cold_start_s=cold_start_s,
        tick_s=tick_s,
        min_replicas=min_replicas,
        mean_input_tokens=max(1.0, sum(r.input_tokens for r in trace.requests) / n),
        mean_output_tokens=max(1.0, sum(r.output_tokens for r in trace.requests) / n),
    )
