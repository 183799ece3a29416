"""The scheduler: demands + fleet snapshot + existing replicas -> a placement plan. Purely
computational, no side-effects; ``now`` is an argument, never read from a clock.

Two decisions per replica, each explained:

1. **Which accelerator type and TP size.** For every accelerator type in the fleet the
   performance model gives the smallest feasible TP and the cost per million output tokens.
   Types are filtered by the request's vendor/type allow- and deny-lists, by engine support
   (the catalog's engines per vendor and model), by dtype and by the price cap; the survivors
   are ranked by cost per token. Replicas are added from the cheapest option until the target
   is met; when that pool runs dry the next option takes over (mixing types). For the last,
   partial replica the option with the lowest absolute cost per hour that still covers the
   remainder is chosen, which is cheaper than another large replica (mixing when cheaper).
   The TP size is sized for the request's *mix*, not only its mean: with p95 prompt/output
   lengths in the workload, the p95 prompt must prefill within the TTFT target and the KV cache
   must hold a p95 sequence at the planned batch, so a long-prompt mix gets more prefill compute
   and KV than a short-prompt mix of the same model; each placement's explanation ends with
   ``shape: ...``, what sized it and why the smaller degrees would not do.
2. **Which node and which devices.** Nodes of the chosen type sit in buckets by free healthy
   devices. A placement walks the buckets from "exactly tp free" upwards (best fit: keeps whole
   nodes free for large TP groups, against fragmentation) and scores at most ``candidates``
   eligible nodes: fewer devices left free, fewer replicas of the same request on the node and in
   its cluster (spread across failure domains), longer remaining lease, lower price. TP groups
   stay inside one node; devices are taken from one NUMA node when possible.

Speed: a placement touches a bounded number of nodes, not the fleet, so the cost per placement
stays flat as the fleet grows. Nodes that are not eligible at all (cordoned, out of lease,
wrong cluster) are counted and named per reason in the explanation; the full count is only
computed for a request that could not be fully placed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from controlplane.catalog.perf import PerfAssumptions, smallest_feasible_tp
from controlplane.catalog.types import Catalog
from controlplane.scheduler.reasons import ReasonCode
from controlplane.scheduler.types import (
    Demand,
    NodeSlot,
    Option,
    PlacedReplica,
    Placement,
    Plan,
    RequestPlan,
)

EXAMPLES = 5
# Node score weights (lower total wins). Spread outweighs a one-device difference in fit, so a
# request's replicas go to different nodes while fresh nodes exist; across requests the fit term
# packs new replicas next to existing ones, keeping whole nodes free for large TP groups.
W_FIT = 1.0  # devices left free after placing, as a share of the node
W_SPREAD_NODE = 0.5  # per replica of the same request already on the node
W_SPREAD_CLUSTER = 0.1  # per replica of the same request already in the node's cluster
W_LEASE = 0.3  # shorter remaining lease (up to 30 days) scores worse
W_PRICE = 0.2  # node price relative to the type's default price
_LONG_LEASE_S = 30 * 86400.0


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    min_lease_remaining_s: float = 3600.0  # never place on a lease ending sooner
    candidates: int = 16  # eligible nodes scored per placement
    max_replicas_per_request: int = 10_000
    assumptions: PerfAssumptions = field(default_factory=PerfAssumptions)
    # online calibration: (model, accelerator) -> observed / predicted throughput of busy replicas
    calibration: Mapping[tuple[str, str], float] = field(default_factory=dict)


class _Pool:
    """Nodes of one accelerator type, bucketed by free healthy devices."""

    def __init__(self, nodes: list[NodeSlot], used: dict[str, set[int]]) -> None:
        self.nodes = {n.node_id: n for n in nodes}
        self.free: dict[str, tuple[tuple[int, int], ...]] = {}
        self.buckets: dict[int, dict[str, None]] = defaultdict(dict)  # insertion-ordered sets
        for node in sorted(nodes, key=lambda n: n.node_id):
            taken = used.get(node.node_id)
            free = tuple(d for d in node.devices if d[0] not in taken) if taken else node.devices
            self.free[node.node_id] = free
            self.buckets[len(free)][node.node_id] = None
        self.max_devices = max((len(n.devices) for n in nodes), default=0)

    def take(self, node_id: str, devices: tuple[int, ...]) -> None:
        free = self.free[node_id]
        before = len(free)
        self.free[node_id] = tuple(d for d in free if d[0] not in devices)
        del self.buckets[before][node_id]
        self.buckets[len(self.free[node_id])][node_id] = None

    def candidates(self, tp: int) -> Iterable[str]:
        for count in sorted(k for k in self.buckets if k >= tp):
            yield from list(self.buckets[count])


def _choose_devices(free: tuple[tuple[int, int], ...], tp: int) -> tuple[int, ...]:
    by_numa: dict[int, list[int]] = defaultdict(list)
    for index, numa in sorted(free):
        by_numa[numa].append(index)
    fitting = [group for group in by_numa.values() if len(group) >= tp]
    if fitting:  # the smallest NUMA group that holds the whole TP group
        return tuple(min(fitting, key=len)[:tp])
    return tuple(index for index, _ in sorted(free)[:tp])


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.0f}h" if seconds >= 3600 else f"{seconds / 60:.0f}m"


class _RequestState:
    def __init__(self, demand: Demand) -> None:
        self.demand = demand
        self.per_node: dict[str, int] = defaultdict(int)
        self.per_cluster: dict[str, int] = defaultdict(int)
        self.rejected: dict[str, int] = defaultdict(int)
        self.examples: dict[str, list[str]] = defaultdict(list)

    def reject(self, reason: str, node_id: str) -> None:
        self.rejected[reason] += 1
        if len(self.examples[reason]) < EXAMPLES:
            self.examples[reason].append(node_id)


def _node_reason(node: NodeSlot, demand: Demand, now: datetime, config: SchedulerConfig) -> str:
    """Why ``node`` cannot take any replica of ``demand`` ("" when it can, device count aside)."""
    if not node.schedulable:
        return node.unschedulable_reason or "not schedulable"
    if demand.clusters and node.cluster not in demand.clusters:
        return "cluster not allowed"
    if demand.regions and node.region not in demand.regions:
        return "region not allowed"
    if node.lease_end is not None:
        remaining = (node.lease_end - now).total_seconds()
        if remaining < config.min_lease_remaining_s:
            return f"lease ends in less than {_hours(config.min_lease_remaining_s)}"
    return ""


def options_for(
    demand: Demand, catalog: Catalog, types: dict[str, int], config: SchedulerConfig
) -> list[Option]:
    """Every accelerator type in the fleet as an option for ``demand``, usable ones first by cost per token.

    ``types`` maps accelerator type -> the most devices any node of that type has (the TP limit).
    """
    model = catalog.model(demand.model)
    options: list[Option] = []
    for name in sorted(types):
        accelerator = catalog.accelerators.get(name)
        if accelerator is None:
            continue
        vendor = accelerator.vendor
        excluded = ""
        if demand.allowed_vendors and vendor not in demand.allowed_vendors:
            excluded = f"vendor {vendor.value} not allowed"
        elif vendor in demand.denied_vendors:
            excluded = f"vendor {vendor.value} denied"
        elif demand.allowed_accelerators and name not in demand.allowed_accelerators:
            excluded = "accelerator type not allowed"
        elif name in demand.denied_accelerators:
            excluded = "accelerator type denied"
        elif not catalog.engines_for(model, vendor):
            excluded = f"no engine serves {model.name} on {vendor.value}"
        if excluded:
            options.append(Option(name, vendor, 0, False, 0, 0, 0, math.inf, excluded))
            continue
        prediction = smallest_feasible_tp(
            model,
            accelerator,
            demand.dtype,
            demand.workload,
            max_tp=types[name],
            assumptions=config.assumptions,
        )
        factor = config.calibration.get((model.name, name), 1.0)
        if factor != 1.0 and prediction.feasible:
            prediction = replace(
                prediction,
                output_tokens_per_s=prediction.output_tokens_per_s * factor,
                input_tokens_per_s=prediction.input_tokens_per_s * factor,
            )
        reason = prediction.reason
        cpm = prediction.cost_per_million_output_tokens
        cap = demand.max_price_per_million_output
        if prediction.feasible and cap is not None and cpm > cap:
            reason = f"{cpm:.2f} per million output tokens is over the cap {cap:g}"
        options.append(
            Option(
                name,
                vendor,
                prediction.tp,
                prediction.feasible and not reason,
                prediction.output_tokens_per_s,
                prediction.input_tokens_per_s,
                prediction.cost_per_hour,
                cpm,
                reason,
                prediction.note if prediction.feasible else "",
            )
        )
    return sorted(options, key=lambda o: (not o.feasible, o.cost_per_million_output, o.accelerator))


def schedule(
    nodes: Iterable[NodeSlot],
    demands: Iterable[Demand],
    replicas: Iterable[PlacedReplica],
    catalog: Catalog,
    *,
    now: datetime,
    config: SchedulerConfig | None = None,
) -> Plan:
    """Plan new replicas for every demand. Higher ``priority`` first, then request id."""
    config = config or SchedulerConfig()
    fleet = list(nodes)
    existing = list(replicas)
    used: dict[str, set[int]] = defaultdict(set)
    for replica in existing:
        used[replica.node_id].update(replica.devices)
    by_type: dict[str, list[NodeSlot]] = defaultdict(list)
    for node in fleet:
        by_type[node.accelerator].append(node)
    limits = {name: max((len(n.devices) for n in group), default=0) for name, group in by_type.items()}
    clusters = {n.node_id: n.cluster for n in fleet}
    by_request: dict[str, list[PlacedReplica]] = defaultdict(list)
    for replica in existing:
        by_request[replica.request_id].append(replica)
    wanted = list(demands)
    options = {d.request_id: options_for(d, catalog, limits, config) for d in wanted}

    def plan_in(order: list[Demand]) -> dict[str, RequestPlan]:
        pools = {name: _Pool(group, used) for name, group in by_type.items()}
        return {
            d.request_id: _plan_request(
                d, options[d.request_id], clusters, by_request[d.request_id], pools, now, config
            )
            for d in order
        }

    # Priority always comes first. Within a priority level the order decides who gets the cheap
    # capacity; two orders are tried (largest regret first, largest spend first) and the plan
    # that fully serves more requests, then costs less, wins.
    def spend(d: Demand) -> float:
        usable = [o for o in options[d.request_id] if o.feasible]
        return usable[0].cost_per_million_output * d.target_output_tokens_per_s if usable else 0.0

    orders = [
        sorted(wanted, key=lambda d: (-d.priority, -_regret(d, options[d.request_id]), d.request_id)),
        sorted(wanted, key=lambda d: (-d.priority, -spend(d), d.request_id)),
    ]
    best: dict[str, RequestPlan] | None = None
    best_key: tuple[int, float] | None = None
    for order in orders:
        candidate = plan_in(order)
        key = (
            -sum(p.status == "satisfied" for p in candidate.values()),
            sum(pl.cost_per_hour for p in candidate.values() for pl in p.placements),
        )
        if best_key is None or key < best_key:
            best, best_key = candidate, key
    assert best is not None or not wanted
    plans = best or {}
    # report in priority order, then request id, whatever order they were planned in
    return Plan(tuple(plans[d.request_id] for d in sorted(wanted, key=lambda d: (-d.priority, d.request_id))))


def _regret(demand: Demand, options: list[Option]) -> float:
    """What planning ``demand`` late could cost: its need priced at the second-best option's
    cost per token minus the best one's (infinite with a single usable option). Within a priority
    level, requests with more to lose take the cheap capacity first."""
    usable = [o for o in options if o.feasible]
    if not usable:
        return 0.0
    if len(usable) == 1:
        return math.inf
    return (
        usable[1].cost_per_million_output - usable[0].cost_per_million_output
    ) * demand.target_output_tokens_per_s


def _plan_request(
    demand: Demand,
    options: list[Option],
    clusters: dict[str, str],
    mine: list[PlacedReplica],
    pools: dict[str, _Pool],
    now: datetime,
    config: SchedulerConfig,
) -> RequestPlan:
    state = _RequestState(demand)
    for replica in mine:
        state.per_node[replica.node_id] += 1
        if replica.node_id in clusters:
            state.per_cluster[clusters[replica.node_id]] += 1
    have_out = sum(r.output_tokens_per_s for r in mine)
    usable = [o for o in options if o.feasible]
    need_out = demand.target_output_tokens_per_s - have_out
    need_in = demand.target_input_tokens_per_s - sum(
        r.output_tokens_per_s * demand.workload.input_tokens / demand.workload.output_tokens for r in mine
    )
    placements: list[Placement] = []
    if not usable:
        code, why_not = _why_no_option(options)
        return _finish(state, "unsatisfiable", code, why_not, placements, have_out, options)
    exhausted: set[str] = set()
    while (need_out > 1e-9 or need_in > 1e-9) and len(placements) < config.max_replicas_per_request:
        candidates = [o for o in usable if o.accelerator not in exhausted]
        if not candidates:
            break
        option, why = _pick_option(candidates, usable[0], need_out, need_in)
        placement = _place(option, why, demand, pools[option.accelerator], state, now, config)
        if placement is None:
            exhausted.add(option.accelerator)
            continue
        placements.append(placement)
        need_out -= option.output_tokens_per_s
        need_in -= option.input_tokens_per_s
    if need_out <= 1e-9 and need_in <= 1e-9:
        return _finish(state, "satisfied", None, "", placements, have_out, options)
    # Not fully placed: recount, once per node, why each node of a usable type could not help.
    state.rejected.clear()
    state.examples.clear()
    for option in usable:
        for node in pools[option.accelerator].nodes.values():
            reason = _node_reason(node, demand, now, config)
            if not reason and len(pools[option.accelerator].free[node.node_id]) < option.tp:
                reason = f"fewer than {option.tp} free healthy devices"
            if reason:
                state.reject(reason, node.node_id)
    missing = max(need_out, 0.0)
    reason = f"fleet full: {missing:.0f} output tokens/s still unplaced after {len(placements)} new replicas"
    status = "partial" if placements or mine else "unsatisfiable"
    return _finish(state, status, ReasonCode.FLEET_FULL, reason, placements, have_out, options)


def _pick_option(
    candidates: list[Option], best: Option, need_out: float, need_in: float
) -> tuple[Option, str]:
    """The option for the next replica, and why (for the explanation).

    Each option is costed as the replicas it would take to cover the whole remaining need
    (ceil(need / replica throughput) x cost per hour). For a large need that is the cheapest per
    token; for a remainder smaller than one big replica it can be one or two smaller ones.
    """

    def total(option: Option) -> tuple[float, float]:
        count = math.ceil(max(need_out, 0.0) / option.output_tokens_per_s) if need_out > 0 else 0
        if need_in > 0 and option.input_tokens_per_s > 0:
            count = max(count, math.ceil(need_in / option.input_tokens_per_s))
        return max(count, 1) * option.cost_per_hour, option.cost_per_million_output

    choice = min(candidates, key=total)
    if choice is candidates[0]:
        return choice, "cheapest per token" if choice is best else "mixed in: cheaper pools are full"
    return choice, "mixed in: the remainder costs less on this type"


def _place(
    option: Option,
    why_type: str,
    demand: Demand,
    pool: _Pool,
    state: _RequestState,
    now: datetime,
    config: SchedulerConfig,
) -> Placement | None:
    best_score: tuple[float, str] | None = None
    best_node: str | None = None
    scored = 0
    per_bucket = max(2, config.candidates // 4)
    bucket_of: dict[str, int] = {}
    taken_from: dict[int, int] = defaultdict(int)
    for node_id in pool.candidates(option.tp):
        free = len(pool.free[node_id])
        if taken_from[free] >= per_bucket:
            continue  # sample every fit level, not just the tightest one
        node = pool.nodes[node_id]
        reason = _node_reason(node, demand, now, config)
        if reason:
            state.reject(reason, node_id)
            continue
        taken_from[free] += 1
        bucket_of[node_id] = free
        lease_left = (node.lease_end - now).total_seconds() if node.lease_end else _LONG_LEASE_S
        price = node.price_per_accelerator_hour
        if price is None:
            price = option.cost_per_hour / max(option.tp, 1)
        score = (
            W_FIT * (free - option.tp) / max(pool.max_devices, 1)
            + W_SPREAD_NODE * state.per_node[node_id]
            + W_SPREAD_CLUSTER * state.per_cluster[node.cluster]
            + W_LEASE * (1.0 - min(lease_left, _LONG_LEASE_S) / _LONG_LEASE_S)
            + W_PRICE * price / max(option.cost_per_hour / max(option.tp, 1), 1e-9),
            node_id,
        )
        if best_score is None or score < best_score:
            best_score, best_node = score, node_id
        scored += 1
        if scored >= config.candidates:
            break
    if best_node is None:
        return None
    node = pool.nodes[best_node]
    devices = _choose_devices(pool.free[best_node], option.tp)
    pool.take(best_node, devices)
    state.per_node[best_node] += 1
    state.per_cluster[node.cluster] += 1
    assert best_score is not None
    lease = (
        "owned" if node.lease_end is None else f"lease {_hours((node.lease_end - now).total_seconds())} left"
    )
    reason = (
        f"{option.accelerator} tp{option.tp} at {option.cost_per_million_output:.2f}/M output tokens "
        f"({why_type}); "
        f"node {best_node}: {bucket_of[best_node] - option.tp} devices left free, {lease}, "
        f"{state.per_node[best_node] - 1} replicas of this request already there"
    )
    if option.sizing:
        reason += f"; shape: {option.sizing}"

    return Placement(
        demand.request_id,
        option.accelerator,
        option.tp,
        best_node,
        devices,
        option.output_tokens_per_s,
        option.cost_per_hour,
        reason,
        option.input_tokens_per_s,
    )


def _why_no_option(options: list[Option]) -> tuple[ReasonCode, str]:
    if not options:
        return ReasonCode.NO_ACCELERATOR, "no accelerator in the fleet"
    priced = [o for o in options if "over the cap" in o.reason]
    if priced:
        cheapest = min(priced, key=lambda o: o.cost_per_million_output)
        return ReasonCode.PRICE_CAP, (
            f"price cap below the cheapest option "
            f"({cheapest.accelerator} at {cheapest.cost_per_million_output:.2f} per million output tokens)"
        )
    return ReasonCode.NO_ALLOWED_ACCELERATOR, "no allowed accelerator can serve the model: " + "; ".join(
        f"{o.accelerator}: {o.reason}" for o in options
    )


def _finish(
    state: _RequestState,
    status: str,
    code: ReasonCode | None,
    reason: str,
    placements: list[Placement],
    have_out: float,
    options: list[Option],
) -> RequestPlan:
    return RequestPlan(
        request_id=state.demand.request_id,
        status=status,
        reason=reason,
        code=code,
        placements=tuple(placements),
        existing_output_tokens_per_s=have_out,
        planned_output_tokens_per_s=have_out + sum(p.output_tokens_per_s for p in placements),
        options=tuple(options),
        rejected_nodes=dict(state.rejected),
        rejected_examples={k: tuple(v) for k, v in state.examples.items()},
    )
