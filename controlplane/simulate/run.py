"""What ``tokenfab simulate`` and ``bench/autoscaler.py`` share: fleets, policy names, the run.

The fleet is sized from the trace (``TYPE:autoxDEVICES``) so that no policy's comparison is
capped by it (:func:`fleet_replicas`). Every result still reports ``fleet_capped_s``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from dataclasses import replace

from controlplane.autoscale.baselines import AibrixApaPolicy, KpaPolicy, RayServePolicy, StaticPolicy
from controlplane.autoscale.feasibility import TtftTarget, feasibility_for
from controlplane.autoscale.oracle import OraclePolicy
from controlplane.autoscale.policy import Policy, TokenfabPolicy, UnitCapacity
from controlplane.catalog import Catalog
from controlplane.domain.nodes import Vendor
from controlplane.scheduler import NodeSlot
from controlplane.simulate.defaults import POLICY_NAMES
from controlplane.simulate.oracle import OraclePlan
from controlplane.simulate.sim import Scenario, Simulator
from controlplane.simulate.sizing import needs, peak_replicas
from controlplane.simulate.trace import Trace

LATE_HOLD_S = 600.0  # oracle_late_hold keeps the largest count of this long (Tokenfab's burst hold)
_PLANS: weakref.WeakKeyDictionary[Simulator, dict[int, tuple[Trace, OraclePlan]]] = (
    weakref.WeakKeyDictionary()
)


def oracle_plan(simulator: Simulator, trace: Trace) -> OraclePlan:
    """The oracle's plan for ``trace`` on ``simulator``, planned once and shared by the oracle and
    its causal references (the plan search is the costly part)."""
    from controlplane.simulate.oracle import plan_oracle

    plans = _PLANS.setdefault(simulator, {})
    if id(trace) not in plans:
        plans[id(trace)] = (trace, plan_oracle(simulator, trace))
    return plans[id(trace)][1]


def make_fleet(catalog: Catalog, spec: str, *, auto_nodes: int = 0) -> tuple[NodeSlot, ...]:
    """``"910B4:8x8,H100:2x8"``: accelerator type, then nodes x devices per node; ``auto`` as the
    node count takes ``auto_nodes``."""
    nodes: list[NodeSlot] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, shape = part.partition(":")
        count, _, devices = shape.partition("x")
        if name not in catalog.accelerators:
            known = ", ".join(sorted(catalog.accelerators))
            raise ValueError(f"fleet: unknown accelerator type {name!r} (known: {known})")
        if count == "auto":
            count = str(max(1, auto_nodes))
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
    """A policy by name; ``oracle`` plans its schedule on ``trace`` (the trace it will replay).
    ``oracle_late`` plays that plan a cold start plus a decision interval late (each window's
    replicas asked when the window begins, Ready a cold start into it): the causal reference.
    ``oracle_late_hold`` also holds the largest count of the last ``LATE_HOLD_S``."""

    def oracle(name: str, delay: bool, hold_s: float) -> Callable[[], Policy]:
        def build() -> Policy:
            plan = oracle_plan(simulator, trace)
            s = simulator.scenario
            lead = s.cold_start_s + s.tick_s
            return OraclePolicy(
                plan.window_s, plan.replicas, lead_s=lead, name=name, delay_s=lead if delay else 0.0,
                hold_s=hold_s,
            )  # fmt: skip

        return build

    factories: dict[str, Callable[[], Policy]] = {
        "tokenfab": TokenfabPolicy,
        "ray_serve": RayServePolicy,
        "aibrix_apa": AibrixApaPolicy,
        "kpa": KpaPolicy,
        "static_peak": lambda: StaticPolicy(peak_replicas(trace, simulator.declared)),
        "oracle": oracle("oracle", False, 0.0),
        "oracle_late": oracle("oracle_late", True, 0.0),
        "oracle_late_hold": oracle("oracle_late_hold", True, LATE_HOLD_S),
    }
    if name not in factories:
        raise ValueError(f"policy: unknown policy {name!r} (known: {', '.join(POLICY_NAMES)})")
    return factories[name]()


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
    ttft_prompt_tokens_per_s: float = 0.0,
    mix_from: Trace | None = None,
) -> Scenario:
    """The scenario for ``trace``; the declared mix from ``mix_from`` (the warm-up part) when given."""
    mix = mix_from if mix_from is not None and mix_from.requests else trace
    n = max(1, len(mix.requests))
    scenario = Scenario(
        model=model,
        nodes=make_fleet(catalog, fleet, auto_nodes=1),
        ttft_target_s=ttft_s,
        tpot_target_s=tpot_s,
        cold_start_s=cold_start_s,
        tick_s=tick_s,
        min_replicas=min_replicas,
        mean_input_tokens=max(1.0, sum(r.input_tokens for r in mix.requests) / n),
        mean_output_tokens=max(1.0, sum(r.output_tokens for r in mix.requests) / n),
        ttft_prompt_tokens_per_s=ttft_prompt_tokens_per_s,
    )
    scenario = _with_tail(scenario, mix, catalog)
    if "auto" not in fleet:
        return scenario
    unit = Simulator(scenario, catalog).declared
    per_node = min(len(node.devices) for node in scenario.nodes if node.accelerator == unit.accelerator)
    replicas = fleet_replicas(trace, unit, ttft_s=ttft_s, tpot_s=tpot_s)
    nodes = math.ceil(replicas / max(1, per_node // unit.tp))
    return replace(scenario, nodes=make_fleet(catalog, fleet, auto_nodes=nodes))


def _with_tail(scenario: Scenario, mix: Trace, catalog: Catalog) -> Scenario:
    """``scenario`` with the declared mix's p95 prompt and output lengths, over the requests
    that some shape of the fleet can serve at all (an infeasible one is reported apart, and must
    not size every replica), so the scheduler sizes the shape for the tail, not only the mean."""
    types: dict[str, int] = {}
    for node in scenario.nodes:
        types[node.accelerator] = max(types.get(node.accelerator, 0), len(node.devices))
    feasibility = feasibility_for(
        catalog, scenario.model, types, TtftTarget(scenario.ttft_target_s, scenario.ttft_prompt_tokens_per_s),
        dtype=scenario.dtype,
    )  # fmt: skip
    served = [r for r in mix.requests if feasibility.check(r.input_tokens, r.output_tokens) is None]
    if not served:
        return scenario
    return replace(
        scenario,
        p95_input_tokens=_p95(r.input_tokens for r in served),
        p95_output_tokens=_p95(r.output_tokens for r in served),
    )


def _p95(values: Iterable[int]) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)])


def fleet_replicas(trace: Trace, unit: UnitCapacity, *, ttft_s: float, tpot_s: float) -> int:
    """Replicas a fleet sized for ``trace`` holds: four times the busiest 10 s at full predicted
    capacity, and one per request of the busiest minute (a request-count policy such as Ray
    Serve's asks for one replica per two requests in flight, in a backlog a minute's arrivals can
    all be in flight, and a KV-usage policy such as APA doubles per step), plus four. ``ttft_s``
    and ``tpot_s`` count a request longer than a minute in flight as more than one."""
    peak = max(needs(trace, unit, 10.0), default=1.0)
    per_minute: dict[int, float] = {}
    for r in trace.requests:
        minute = int(r.arrival_s // 60)
        per_minute[minute] = per_minute.get(minute, 0.0) + max(1.0, (ttft_s + r.output_tokens * tpot_s) / 60)
    return math.ceil(max(4 * peak, max(per_minute.values(), default=1.0))) + 4
