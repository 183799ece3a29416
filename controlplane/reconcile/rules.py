"""The replica rules of :func:`controlplane.reconcile.decide.decide`, one function each, on a
working state local to one decision (:class:`Working`), and the helpers they share. Purely
computational: ``now`` is an argument, nothing here reads a clock or does I/O. The rules
themselves, and their order, are described in :mod:`controlplane.reconcile.decide`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from controlplane.catalog.types import Catalog
from controlplane.domain.replicas import LIVE, TERMINAL, ReplicaRecord, ReplicaState
from controlplane.reconcile.status import EPS, request_status
from controlplane.reconcile.world import Decision, Event, ReconcileConfig, Seen, World
from controlplane.scheduler import NodeSlot, PlacedReplica, RequestPlan, schedule
from controlplane.scheduler.demand import demand_of

S = ReplicaState


def _age_s(record: ReplicaRecord, now: datetime) -> float:
    return (now - record.updated_at).total_seconds()


def observe_replica(
    record: ReplicaRecord, seen: Seen | None, now: datetime, cfg: ReconcileConfig
) -> ReplicaRecord:
    """Rule 2 for one replica whose executor answered; returns the record (moved or not)."""
    state = record.state
    if state is S.STARTING:
        if seen is not None and seen.state == "ready":
            return record.moved(
                S.READY, "engine healthy", now, actor_id=seen.actor_id, endpoint=seen.endpoint
            )
        if seen is not None and seen.state == "failed":
            return record.moved(S.FAILED, f"engine failed to start: {seen.message}", now)
        if seen is None and _age_s(record, now) > cfg.actor_grace_s:
            return record.moved(S.FAILED, "actor not found in Ray", now)
        if _age_s(record, now) > cfg.start_timeout_s:
            return record.moved(S.FAILED, f"not ready within {cfg.start_timeout_s:g} s", now)
    elif state is S.READY:
        if seen is None:
            return record.moved(S.FAILED, "actor gone from Ray", now)
        if seen.state == "failed":
            return record.moved(S.FAILED, f"actor died: {seen.message}", now)
        if seen.endpoint and seen.endpoint != record.endpoint:
            return record.model_copy(update={"endpoint": seen.endpoint, "updated_at": now})
    elif state is S.DRAINING and seen is None:
        return record.moved(S.STOPPED, "stopped", now)
    return record


def surplus(
    live: list[ReplicaRecord], target: float, *, catalog: Catalog | None = None
) -> list[ReplicaRecord]:
    """Rule 3: replicas to drain so that predicted capacity stays >= target: not-yet-Ready ones
    first, then the dearest per token (so a cheaper replica is never drained to keep a dearer one)."""
    total = sum(r.predicted_output_tokens_per_second for r in live)

    def per_token(r: ReplicaRecord) -> float:
        accelerator = catalog.accelerators.get(r.accelerator) if catalog else None
        price = accelerator.price_per_hour * r.tensor_parallel if accelerator else 0.0
        return price / max(r.predicted_output_tokens_per_second, EPS)

    order = sorted(
        live, key=lambda r: (r.state is S.READY, -per_token(r), r.predicted_output_tokens_per_second, r.id)
    )
    drained = []
    for replica in order:
        if total - replica.predicted_output_tokens_per_second >= target - EPS:
            total -= replica.predicted_output_tokens_per_second
            drained.append(replica)
    return drained


def departing_reason(
    record: ReplicaRecord, slots: Mapping[str, NodeSlot], now: datetime, cfg: ReconcileConfig
) -> str:
    """Why ``record`` must move off its node soon ("" when it need not)."""
    slot = slots.get(record.node_id)
    if slot is None:
        return ""
    if slot.state == "draining":
        return f"node {record.node_id} is draining"
    if slot.state == "suspect":  # missed heartbeats: replace now, keep it serving meanwhile
        return f"node {record.node_id} is suspect (missed heartbeats)"
    healthy = {index for index, _numa in slot.devices}
    sick = [d for d in record.devices if d not in healthy]
    if sick:  # an ECC/XID-class error reported by the agent: the device is out of the slot
        return f"device {sick[0]} of {record.node_id} is unhealthy"
    if slot.quarantined_until is not None and slot.quarantined_until > now:
        return f"node {record.node_id} is quarantined (flapping)"
    if slot.lease_end is None:
        return ""
    lead = (
        cfg.start_times.get((record.model, record.accelerator), cfg.default_start_s)
        + cfg.replacement_margin_s
    )
    left = (slot.lease_end - now).total_seconds()
    if left <= lead:
        return f"lease of {record.node_id} ends at {slot.lease_end.isoformat(timespec='seconds')}"
    return ""


def backoff_until(failed: list[ReplicaRecord], now: datetime, cfg: ReconcileConfig) -> datetime | None:
    recent = [
        r
        for r in failed
        if (now - r.updated_at).total_seconds() <= cfg.failure_window_s
        and (r.updated_at - r.created_at).total_seconds() <= cfg.crash_within_s  # crashed, not lost later
    ]
    if not recent:
        return None
    delay = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (len(recent) - 1))
    return max(r.updated_at for r in recent) + timedelta(seconds=delay)


def usable_fleet(world: World) -> list[NodeSlot]:
    slots = []
    for slot in world.fleet:
        present = world.ray_nodes.get(slot.cluster)
        if slot.schedulable and present is None:
            slot = replace(
                slot, schedulable=False, unschedulable_reason=f"no executor for cluster {slot.cluster}"
            )
        elif slot.schedulable and slot.node_id not in present:  # type: ignore[operator]
            slot = replace(slot, schedulable=False, unschedulable_reason="no Ray node")
        slots.append(slot)
    return slots


@dataclass
class Working:
    """The working state of one decision, built up rule by rule (local to :func:`decide`)."""

    out: Decision = field(default_factory=Decision)
    current: dict[str, ReplicaRecord] = field(default_factory=dict)  # replica id -> after the rules so far
    lost_now: defaultdict[str, list[ReplicaRecord]] = field(default_factory=lambda: defaultdict(list))
    departing: dict[str, str] = field(default_factory=dict)  # replica id -> why it must move
    plans: dict[str, RequestPlan] = field(default_factory=dict)
    waiting: dict[str, datetime] = field(default_factory=dict)  # request id -> backoff end

    def by_request(self) -> defaultdict[str, list[ReplicaRecord]]:
        grouped: defaultdict[str, list[ReplicaRecord]] = defaultdict(list)
        for record in self.current.values():
            grouped[record.request_id].append(record)
        return grouped

    def move(self, moved: ReplicaRecord) -> None:
        """Record a move decided after rule 2 (the latest move of a replica wins)."""
        updates = {u.id: u for u in self.out.updates}
        updates[moved.id] = moved
        self.out.updates = list(updates.values())
        if moved.state is S.DRAINING:
            self.out.stops.append(moved)
        self.current[moved.id] = moved


def slots_by_node(world: World) -> dict[str, NodeSlot]:
    return {s.node_id: s for s in world.fleet}


def move_replicas(world: World, cfg: ReconcileConfig, p: Working) -> None:
    """Rules 1 (cancelled or gone; never accepted), 2 (what the executor reports) and 4
    (unplanned loss) for every replica not yet Stopped or Failed; terminal records past the
    history window expire."""
    now, out = world.now, p.out
    requests = {r.id: r for r in world.requests}
    slots = slots_by_node(world)
    for record in world.replicas:
        if record.state in TERMINAL:
            if _age_s(record, now) > cfg.history_s:
                out.expired.append(record)
            p.current[record.id] = record
            continue
        moved = record
        request = requests.get(record.request_id)
        if request is None or not request.active:
            if record.state is S.PENDING:
                moved = record.moved(S.STOPPED, "request cancelled", now)
            elif record.state in (S.STARTING, S.READY):
                moved = record.moved(S.DRAINING, "request cancelled", now)
        if moved.state is S.PENDING and _age_s(moved, now) > cfg.start_timeout_s:
            moved = moved.moved(
                S.FAILED, f"the executor did not take the start within {cfg.start_timeout_s:g} s", now
            )
        seen_in = world.seen.get(record.cluster)
        if seen_in is not None and moved.state is not S.PENDING:
            moved = observe_replica(moved, seen_in.get(record.id), now, cfg)
        slot = slots.get(record.node_id)
        if moved.state in (S.PENDING, S.STARTING, S.READY) and slot is not None and slot.state == "lost":
            moved = moved.moved(S.FAILED, f"node {record.node_id} lost (missed heartbeats)", now)
            out.events.append(
                Event("replica_lost", moved.reason, record.request_id, record.id, record.node_id)
            )
            p.lost_now[record.request_id].append(moved)
        elif moved.state is S.FAILED and record.state is S.READY:
            out.events.append(
                Event("replica_failed", moved.reason, record.request_id, record.id, record.node_id)
            )
            p.lost_now[record.request_id].append(moved)
        if moved is not record:
            out.updates.append(moved)
            out.notes.append(
                f"replica {record.id}: {record.state.value} -> {moved.state.value} ({moved.reason})"
            )
        if moved.state is S.DRAINING:
            out.stops.append(moved)  # failed actors that linger are stopped as orphans below
        p.current[record.id] = moved


def drain_surplus(world: World, catalog: Catalog, p: Working) -> None:
    """Rule 3: a lowered target drains the live replicas it no longer needs."""
    by_request = p.by_request()
    for request in world.requests:
        if not request.active:
            continue
        live = [r for r in by_request[request.id] if r.state in LIVE and r.id not in p.departing]
        for replica in surplus(live, world.target(request), catalog=catalog):
            state = S.STOPPED if replica.state is S.PENDING else S.DRAINING
            p.move(replica.moved(state, "surplus: the target is met without it", world.now))
            p.out.notes.append(f"replica {replica.id}: drained as surplus for {request.id}")


def place_deficit(
    world: World,
    catalog: Catalog,
    cfg: ReconcileConfig,
    p: Working,
    *,
    new_id: Callable[[str], str],
    engine_for: Callable[[ReplicaRecord], str],
) -> defaultdict[str, list[ReplicaRecord]]:
    """Rule 6: the scheduler places what every active request still lacks (after its backoff);
    returns the replicas by request, new ones included."""
    now, out, departing = world.now, p.out, p.departing
    requests = {r.id: r for r in world.requests}
    by_request = p.by_request()
    live_all = [r for r in p.current.values() if r.state in LIVE or r.state is S.DRAINING]
    placed = [
        PlacedReplica(
            r.id, r.request_id, r.node_id, r.accelerator, r.tensor_parallel, r.devices,
            r.predicted_output_tokens_per_second if r.state in LIVE and r.id not in departing else 0.0,
        )
        for r in live_all
    ]  # fmt: skip
    demands = []
    for request in world.requests:
        if not request.active:
            continue
        failed = [r for r in by_request[request.id] if r.state is S.FAILED]
        until = backoff_until(failed, now, cfg)
        if until is not None and until > now:
            p.waiting[request.id] = until
            continue
        target = world.target(request)
        if target <= EPS:
            continue  # scaled to zero
        demand = demand_of(request.id, request.spec)
        if target != demand.target_output_tokens_per_s:
            demand = replace(
                demand,
                target_output_tokens_per_s=target,
                target_input_tokens_per_s=demand.target_input_tokens_per_s
                * target
                / request.spec.output_tokens_per_second,
            )
        demands.append(demand)
    fleet = usable_fleet(world)
    plan = schedule(fleet, demands, placed, catalog, now=now, config=cfg.scheduler)
    clusters = {s.node_id: s for s in fleet}
    p.plans = {rp.request_id: rp for rp in plan.requests}
    for request_plan in plan.requests:
        request = requests[request_plan.request_id]
        planned: list[ReplicaRecord] = []
        for placement in request_plan.placements:
            slot = clusters[placement.node_id]
            record = ReplicaRecord(
                id=new_id(request.id),
                request_id=request.id,
                tenant=request.tenant,
                model=request.spec.model,
                vendor=slot.vendor,
                accelerator=placement.accelerator,
                cluster=slot.cluster,
                node_id=placement.node_id,
                devices=placement.devices,
                tensor_parallel=placement.tp,
                engine="",
                dtype="bf16",
                predicted_output_tokens_per_second=round(placement.output_tokens_per_s, 1),
                predicted_input_tokens_per_second=round(placement.input_tokens_per_s, 1),
                calibration_factor=cfg.scheduler.calibration.get(
                    (request.spec.model, placement.accelerator), 1.0
                ),
                reason=placement.reason,
                created_at=now,
                updated_at=now,
            )
            planned.append(record.model_copy(update={"engine": engine_for(record)}))
        # the planner may end with a large replica that makes an earlier small one redundant
        live = [r for r in by_request[request.id] if r.state in LIVE and r.id not in departing]
        redundant = {r.id for r in surplus(live + planned, world.target(request), catalog=catalog)}
        for record in planned:
            if record.id in redundant:
                continue
            out.creates.append(record)
            by_request[request.id].append(record)
            out.notes.append(
                f"replica {record.id}: new for {request.id} on {record.node_id} devices "
                f"{list(record.devices)} ({record.reason})"
            )
    return by_request


def announce_replacements(p: Working) -> None:
    """An event per unplanned replacement (rule 4's loss, rule 6's new replicas), with its cause."""
    for request_id, failed in p.lost_now.items():
        fresh = [r.id for r in p.out.creates if r.request_id == request_id]
        if fresh:
            for replica in failed:
                message = f"{replica.reason}: replacing {replica.id} with {', '.join(fresh)}"
                p.out.events.append(
                    Event("replacement_started", message, request_id, replica.id, replica.node_id)
                )


def retire_departing(world: World, p: Working, by_request: defaultdict[str, list[ReplicaRecord]]) -> None:
    """Rule 5, break: departing replicas are retired once the rest meets the target on Ready
    replicas (or at once when the lease has ended or the node is gone, or within the request's
    disruption budget)."""
    now, out, departing, slots = world.now, p.out, p.departing, slots_by_node(world)
    for request in world.requests:
        leaving = [r for r in by_request[request.id] if r.id in departing and r.state in LIVE]
        if not leaving:
            continue
        new_ones = [r for r in by_request[request.id] if r.state is S.PENDING and r.created_at == now]
        if new_ones:
            names = ", ".join(r.id for r in new_ones)
            for replica in leaving:
                message = f"{departing[replica.id]}: replacing {replica.id} with {names}"
                out.events.append(
                    Event("replacement_started", message, request.id, replica.id, replica.node_id)
                )
        target = world.target(request)
        staying = sum(
            r.predicted_output_tokens_per_second
            for r in by_request[request.id]
            if r.state is S.READY and r.id not in departing
        )
        covered = staying >= target - EPS or not request.active
        # the disruption budget: Ready capacity (departing replicas included, they still serve)
        # may fall to this floor before replacements are Ready
        floor = target * (1 - request.spec.max_unavailable_percent / 100)
        serving = staying + sum(r.predicted_output_tokens_per_second for r in leaving if r.state is S.READY)
        for replica in sorted(leaving, key=lambda r: r.predicted_output_tokens_per_second):
            slot = slots.get(replica.node_id)
            ended = slot is not None and slot.lease_end is not None and slot.lease_end <= now
            tps = replica.predicted_output_tokens_per_second if replica.state is S.READY else 0.0
            budget = request.spec.max_unavailable_percent > 0 and serving - tps >= floor - EPS
            if not (covered or ended or budget):
                continue
            serving -= tps
            why = f"{departing[replica.id]}: " + (
                "replaced"
                if covered
                else "lease ended before a replacement was Ready"
                if ended
                else f"within the disruption budget ({request.spec.max_unavailable_percent:g}% of the target)"
            )
            moved = replica.moved(S.STOPPED if replica.state is S.PENDING else S.DRAINING, why, now)
            p.move(moved)
            by_request[request.id] = [moved if r.id == moved.id else r for r in by_request[request.id]]
            out.events.append(Event("replica_retired", why, request.id, replica.id, replica.node_id))
            out.notes.append(f"replica {replica.id}: retired ({why})")


def stop_orphans(world: World, p: Working) -> None:
    """Actors that no live record claims are stopped."""
    claimed = {r.id for r in p.current.values() if r.state not in TERMINAL}
    for cluster, seen in world.seen.items():
        for name in seen:
            if name not in claimed:
                p.out.orphans.append((cluster, name))
                p.out.notes.append(f"actor {name} in {cluster}: no live replica claims it; stopping")


def set_statuses(world: World, p: Working, by_request: defaultdict[str, list[ReplicaRecord]]) -> None:
    """Each request's status from its replicas and plan (:mod:`controlplane.reconcile.status`),
    written only when it changed."""
    for request in world.requests:
        status = request_status(
            request, by_request[request.id], p.plans.get(request.id), p.waiting.get(request.id), world.now,
            world.target(request),
        )  # fmt: skip
        if status != request.status:
            p.out.statuses[request.id] = status
