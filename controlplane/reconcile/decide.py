"""One reconcile decision: desired state (requests) + persisted replicas + what Ray shows -> the
replica transitions, new replicas, stops and request statuses to write. Purely computational:
``now`` is an argument, nothing here reads a clock or does I/O.

Rules, in order, for each replica that is not yet Stopped or Failed:

1. Its request is cancelled or gone: Pending -> Stopped; Starting/Ready -> Draining (and stop it).
   A Pending replica the executor never accepted within ``start_timeout_s`` -> Failed.
2. What the executor of its cluster reports (only when that executor answered this pass; an
   unreachable executor proves nothing, so its replicas keep their state):
   Starting + engine ready -> Ready; actor failed -> Failed; no actor after ``actor_grace_s`` ->
   Failed; still loading after ``start_timeout_s`` -> Failed (and stop it). Ready + actor failed or
   gone -> Failed. Draining + actor gone -> Stopped, otherwise stop it (again: stop is idempotent).
3. Surplus (a target lowered, by the tenant or the autoscaler): the request's live replicas
   whose removal still leaves the predicted capacity at or above the target are drained, the
   least useful first (not yet ready, then smallest predicted tokens/s).
4. Unplanned loss: a replica on a node the fleet declared Lost fails at once (not after Ray
   notices), and rule 6 replaces it in the same pass.
5. Planned loss (make-before-break): a replica on a draining, suspect or quarantined node or an
   unhealthy device, or on a node whose lease ends
   within the replica's expected start time (learned per model and accelerator) plus a margin,
   is *departing*: it keeps serving but does not count towards the target, so the scheduler
   places its replacement elsewhere (any compatible type: the target is in tokens/s); once the
   request's other Ready replicas meet the target it is drained, or at once when the lease has
   ended. No capacity gap as long as the notice is at least the start time.
6. Deficit: the scheduler plans new replicas for every active request against the fleet, the
   live replicas and the nodes each cluster's Ray actually has; a request whose replicas keep
   crashing (failing within ``crash_within_s`` of their creation, not lost after a long healthy
   run) waits out an exponential backoff before it is placed again.

Stopped and Failed records are kept ``history_s`` after they ended, then deleted.

Actors that no live replica record claims (left by a crash between a stop and its record, or
by another installation's wiped keyspace) are stopped.

The target of a request is the one the autoscaler applied (``World.targets``), else the reserved
one from its spec.

Each request's status is then read from its replicas (:mod:`controlplane.reconcile.status`).

:func:`decide` calls one function per rule, in this order, on a working state local to the call
(``_Pass``): ``_move_replicas`` (rules 1, 2, 4), the departing set (rule 5, make),
``_drain_surplus`` (3), ``_place_deficit`` (6), ``_announce_replacements``, ``_retire_departing``
(5, break), ``_stop_orphans``, ``_statuses``. The node judgement (state-change events,
quarantine of flapping nodes) is a decision of its own, in :mod:`controlplane.reconcile.nodes`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from controlplane.catalog.types import Catalog
from controlplane.domain.capacity import CapacityRecord, CapacityStatus
from controlplane.domain.replicas import LIVE, TERMINAL, ReplicaRecord, ReplicaState
from controlplane.reconcile.status import EPS, request_status
from controlplane.scheduler import NodeSlot, PlacedReplica, RequestPlan, SchedulerConfig, schedule
from controlplane.scheduler.demand import demand_of

S = ReplicaState


@dataclass(frozen=True, slots=True)
class Seen:
    """What the executor reported for one actor this pass."""

    state: str  # starting | ready | failed | stopping
    actor_id: str = ""
    endpoint: str = ""
    message: str = ""
    output_tokens_per_second: float = 0.0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    tpot_p95_s: float = 0.0  # 0: no finished request in the window
    running: int = 0


@dataclass(frozen=True, slots=True)
class ReconcileConfig:
    start_timeout_s: float = 900.0  # a large model's weights take minutes to load
    actor_grace_s: float = 15.0  # a Starting replica without an actor after this long failed
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    failure_window_s: float = 600.0
    crash_within_s: float = 120.0  # a failure this soon after creation counts towards the backoff
    history_s: float = 3600.0  # Stopped and Failed records are deleted this long after they ended
    # make-before-break: replace a replica this long (its expected start time plus a margin)
    # before its node's lease ends; start times are learned per (model, accelerator)
    default_start_s: float = 60.0
    replacement_margin_s: float = 30.0
    start_times: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # a node that comes back from Lost this often within the window is quarantined for a while
    quarantine_after: int = 3
    quarantine_window_s: float = 600.0
    quarantine_s: float = 900.0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


@dataclass(frozen=True, slots=True)
class World:
    """Everything observed in one pass."""

    now: datetime
    requests: Sequence[CapacityRecord]
    replicas: Sequence[ReplicaRecord]
    fleet: Sequence[NodeSlot]
    seen: Mapping[str, Mapping[str, Seen]]  # cluster -> replica id -> observation (answered only)
    ray_nodes: Mapping[str, frozenset[str]]  # cluster -> fleet node ids with a live Ray node
    # request id -> output tokens/s the autoscaler applied; absent: the reserved target
    targets: Mapping[str, float] = field(default_factory=dict)

    def target(self, request: CapacityRecord) -> float:
        return self.targets.get(request.id, request.spec.output_tokens_per_second)


@dataclass(frozen=True, slots=True)
class Event:
    """One failover step: what happened, to which replica, request and node, and why."""

    kind: str  # replica_lost | replica_failed | replacement_started | replica_retired
    message: str
    request_id: str = ""
    replica_id: str = ""
    node_id: str = ""


@dataclass
class Decision:
    updates: list[ReplicaRecord] = field(default_factory=list)  # transitions of existing records
    creates: list[ReplicaRecord] = field(default_factory=list)  # new Pending replicas
    stops: list[ReplicaRecord] = field(default_factory=list)  # ask the executor to stop these
    orphans: list[tuple[str, str]] = field(default_factory=list)  # (cluster, actor name) to stop
    expired: list[ReplicaRecord] = field(default_factory=list)  # terminal records past the history
    statuses: dict[str, CapacityStatus] = field(default_factory=dict)  # request id -> new status
    notes: list[str] = field(default_factory=list)  # one line per decision, for the log
    events: list[Event] = field(default_factory=list)  # failover steps, for `tokenfab events`

    @property
    def empty(self) -> bool:
        return not (
            self.updates or self.creates or self.stops or self.orphans or self.statuses or self.expired
        )


def _age_s(record: ReplicaRecord, now: datetime) -> float:
    return (now - record.updated_at).total_seconds()


def _observe(record: ReplicaRecord, seen: Seen | None, now: datetime, cfg: ReconcileConfig) -> ReplicaRecord:
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


def _surplus(
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


def _departing(
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


def _backoff_until(failed: list[ReplicaRecord], now: datetime, cfg: ReconcileConfig) -> datetime | None:
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


def _usable_fleet(world: World) -> list[NodeSlot]:
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
class _Pass:
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


def decide(
    world: World,
    catalog: Catalog,
    cfg: ReconcileConfig,
    *,
    new_id: Callable[[str], str],
    engine_for: Callable[[ReplicaRecord], str] = lambda r: r.engine,
) -> Decision:
    """The rules of the module docstring, in order, one function each. Purely computational."""
    p = _Pass()
    _move_replicas(world, cfg, p)  # rules 1, 2 and 4, and expiry
    # rule 5, make: departing replicas keep serving but do not count towards the target
    slots = _slots(world)
    p.departing = {
        r.id: why
        for r in p.current.values()
        if r.state in LIVE and (why := _departing(r, slots, world.now, cfg))
    }
    _drain_surplus(world, catalog, p)  # rule 3
    by_request = _place_deficit(world, catalog, cfg, p, new_id=new_id, engine_for=engine_for)  # rule 6
    _announce_replacements(p)
    _retire_departing(world, p, by_request)  # rule 5, break
    _stop_orphans(world, p)
    _statuses(world, p, by_request)
    return p.out


def _slots(world: World) -> dict[str, NodeSlot]:
    return {s.node_id: s for s in world.fleet}


def _move_replicas(world: World, cfg: ReconcileConfig, p: _Pass) -> None:
    """Rules 1 (cancelled or gone; never accepted), 2 (what the executor reports) and 4
    (unplanned loss) for every replica not yet Stopped or Failed; terminal records past the
    history window expire."""
    now, out = world.now, p.out
    requests = {r.id: r for r in world.requests}
    slots = _slots(world)
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
            moved = _observe(moved, seen_in.get(record.id), now, cfg)
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


def _drain_surplus(world: World, catalog: Catalog, p: _Pass) -> None:
    """Rule 3: a lowered target drains the live replicas it no longer needs."""
    by_request = p.by_request()
    for request in world.requests:
        if not request.active:
            continue
        live = [r for r in by_request[request.id] if r.state in LIVE and r.id not in p.departing]
        for replica in _surplus(live, world.target(request), catalog=catalog):
            state = S.STOPPED if replica.state is S.PENDING else S.DRAINING
            p.move(replica.moved(state, "surplus: the target is met without it", world.now))
            p.out.notes.append(f"replica {replica.id}: drained as surplus for {request.id}")


def _place_deficit(
    world: World,
    catalog: Catalog,
    cfg: ReconcileConfig,
    p: _Pass,
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
        until = _backoff_until(failed, now, cfg)
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
    fleet = _usable_fleet(world)
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
        redundant = {r.id for r in _surplus(live + planned, world.target(request), catalog=catalog)}
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


def _announce_replacements(p: _Pass) -> None:
    """An event per unplanned replacement (rule 4's loss, rule 6's new replicas), with its cause."""
    for request_id, failed in p.lost_now.items():
        fresh = [r.id for r in p.out.creates if r.request_id == request_id]
        if fresh:
            for replica in failed:
                message = f"{replica.reason}: replacing {replica.id} with {', '.join(fresh)}"
                p.out.events.append(
                    Event("replacement_started", message, request_id, replica.id, replica.node_id)
                )


def _retire_departing(world: World, p: _Pass, by_request: defaultdict[str, list[ReplicaRecord]]) -> None:
    """Rule 5, break: departing replicas are retired once the rest meets the target on Ready
    replicas (or at once when the lease has ended or the node is gone, or within the request's
    disruption budget)."""
    now, out, departing, slots = world.now, p.out, p.departing, _slots(world)
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


def _stop_orphans(world: World, p: _Pass) -> None:
    """Actors that no live record claims are stopped."""
    claimed = {r.id for r in p.current.values() if r.state not in TERMINAL}
    for cluster, seen in world.seen.items():
        for name in seen:
            if name not in claimed:
                p.out.orphans.append((cluster, name))
                p.out.notes.append(f"actor {name} in {cluster}: no live replica claims it; stopping")


def _statuses(world: World, p: _Pass, by_request: defaultdict[str, list[ReplicaRecord]]) -> None:
    """Each request's status from its replicas and plan (:mod:`controlplane.reconcile.status`),
    written only when it changed."""
    for request in world.requests:
        status = request_status(
            request, by_request[request.id], p.plans.get(request.id), p.waiting.get(request.id), world.now,
            world.target(request),
        )  # fmt: skip
        if status != request.status:
            p.out.statuses[request.id] = status


def quarantined_until(comebacks: Sequence[datetime], now: datetime, cfg: ReconcileConfig) -> datetime | None:
    """When a flapping node's quarantine ends (None: not flapping). ``comebacks``: when the node
    came back from Lost, oldest first."""
    recent = [t for t in comebacks if (now - t).total_seconds() <= cfg.quarantine_window_s]
    if len(recent) < cfg.quarantine_after:
        return None
    return recent[-1] + timedelta(seconds=cfg.quarantine_s)


def learned_start_times(replicas: Sequence[ReplicaRecord]) -> dict[tuple[str, str], float]:
    """Median creation-to-Ready seconds of the Ready replicas, per (model, accelerator)."""
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in replicas:
        if r.state is S.READY and r.updated_at >= r.created_at:
            times[(r.model, r.accelerator)].append((r.updated_at - r.created_at).total_seconds())
    return {key: sorted(v)[len(v) // 2] for key, v in times.items()}


@dataclass(frozen=True, slots=True)
class CalibrationSample:
    model: str
    accelerator: str
    predicted_tps: float  # the performance model's, before any calibration factor
    observed_tps: float
    saturated: bool


def calibration_samples(world: World) -> list[CalibrationSample]:
    """Throughput samples of Ready replicas for the online calibration.

    A sample counts (``saturated``) only when the replica runs at the operating point the
    prediction is for: requests are queueing or the KV cache is at least 80% full (it cannot take
    more), and its TPOT p95 is within the request's target (it is not simply overloaded past the
    SLO, where throughput is higher than the SLO allows). An idle replica's throughput measures
    its demand, not its capacity, and so does a lightly loaded one that happens to have a request
    or two arriving at the moment of the scrape: a queue counts from a quarter of the batch up.
    """
    targets = {r.id: r.spec.latency.tpot_p95_ms / 1000 for r in world.requests}
    samples = []
    for record in world.replicas:
        seen = world.seen.get(record.cluster, {}).get(record.id)
        if record.state is not S.READY or seen is None or seen.state != "ready":
            continue
        target = targets.get(record.request_id)
        busy = seen.waiting >= max(2, seen.running / 4) or seen.kv_cache_usage >= 0.8
        within = target is not None and 0 < seen.tpot_p95_s <= target
        samples.append(
            CalibrationSample(
                record.model, record.accelerator,
                record.predicted_output_tokens_per_second / (record.calibration_factor or 1.0),
                seen.output_tokens_per_second, busy and within,
            )
        )  # fmt: skip
    return samples
