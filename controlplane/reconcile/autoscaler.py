"""The live autoscaler: the scaling policy inside the leader's reconcile loop.

Every ``interval_s`` the reconciler hands it what it observed; for each active capacity request
with ``spec.autoscaling.enabled`` it

1. aggregates the Ready replicas' engine metrics (:func:`controlplane.autoscale.signals.aggregate`;
   a replica whose executor answered without metrics, or whose last metrics are older than
   ``stale_after_s``, makes the signals incomplete, which the policy never reads as low demand);
2. builds the :class:`~controlplane.autoscale.policy.ScalingContext`: per-replica capacity from
   the performance model (calibrated, for the request's observed prompt/output mix), expressed in
   the request's own replicas (their mean predicted tokens/s; the scheduler's cheapest option when
   there are none), the floor from the reserved target, the ceiling from the request's
   ``max_output_tokens_per_second`` and ``max_spend_per_hour``, the tenant's quota and what the
   free fleet can still hold, and the cold start learned from this request's Ready replicas;
3. runs the policy (pure; its state lives here, in memory: a new leader starts with an empty one,
   and the policy cannot scale down before a full ``down_delay_s`` of fresh history);
4. turns the desired replica count into an applied target in output tokens/s (never below the
   reserved one) that :func:`controlplane.reconcile.decide.decide` sizes the request for: the
   scheduler's cost logic picks the accelerator types, the surplus rule drains the least useful
   replicas;
5. persists the target and the decision (with its inputs, forecast, predicted utilisation and cost
   and a readable reason) in etcd before anything acts on it; history is bounded per request.

Global mode (``/tokenfab/v1/autoscaler/mode``): ``active``; ``advisory`` decides and records but
applies nothing; ``off`` (the kill switch) does not decide at all. In both, applied targets stay
where they were: stopping the autoscaler never shrinks capacity by itself. A request with
``autoscaling.advisory`` is advisory on its own.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from controlplane.autoscale.context import CapacityByMix, build_context, floor_replicas, step
from controlplane.autoscale.policy import (
    Policy,
    ScalingDecision,
    TokenfabConfig,
    TokenfabPolicy,
    UnitCapacity,
)
from controlplane.autoscale.signals import ReplicaSample, aggregate
from controlplane.capacity.manager import demand_of
from controlplane.capacity.tenants import Tenant
from controlplane.catalog.perf import Workload
from controlplane.catalog.types import Catalog
from controlplane.domain.autoscaling import AppliedTarget, DecisionRecord, Mode, ModeRecord
from controlplane.domain.capacity import CapacityRecord
from controlplane.domain.demand import GatewayDemand, combine
from controlplane.domain.replicas import LIVE, ReplicaRecord, ReplicaState
from controlplane.metrics import ControlPlaneMetrics
from controlplane.reconcile.status import EPS
from controlplane.scheduler import NodeSlot, PlacedReplica, SchedulerConfig, options_for, schedule
from controlplane.scheduler.types import Demand, Option
from controlplane.store import keys
from controlplane.store.base import Store
from tokenfab.logs import get_logger
from tokenfab.v1 import executor_pb2

log = get_logger("autoscaler")
S = ReplicaState


@dataclass(frozen=True, slots=True)
class AutoscalerSettings:
    interval_s: float = 5.0
    history_limit: int = 200  # decisions kept per request
    record_hold_every_s: float = 60.0  # a hold with an unchanged reason is recorded this often
    stale_after_s: float = 15.0
    stats_window_s: float = 10.0  # the engines' rate window: finished requests -> requests/s
    default_cold_start_s: float = 60.0  # until the request's own replicas have shown one
    policy: TokenfabConfig = field(default_factory=TokenfabConfig)


# -- pure pieces ----------------------------------------------------------------------------------


def sample_of(replica_id: str, stats: executor_pb2.EngineStats, at: float, window_s: float) -> ReplicaSample:
    return ReplicaSample(
        replica_id,
        at,
        stats.input_tokens_per_second,
        stats.output_tokens_per_second,
        stats.finished / window_s,
        stats.running,
        stats.waiting,
        stats.kv_cache_usage,
        stats.ttft_p95_s if stats.ttft_p95_s > 0 else math.nan,
        stats.tpot_p95_s if stats.tpot_p95_s > 0 else math.nan,
    )


def learned_cold_start_s(replicas: Sequence[ReplicaRecord]) -> float | None:
    """Median creation-to-Ready time of the Ready replicas (their ``updated_at`` is the Ready move)."""
    times = [
        (r.updated_at - r.created_at).total_seconds()
        for r in replicas
        if r.state is S.READY and r.updated_at >= r.created_at
    ]
    return statistics.median(times) if times else None


def applied_target(desired: int, unit_tps: float, reserved: float, *, scale_to_zero: bool) -> float:
    """Output tokens/s that sizes the request for ``desired`` replicas of ``unit_tps`` each."""
    if desired <= 0 and scale_to_zero:
        return 0.0
    return max(reserved, desired * unit_tps)


def replica_cost_per_hour(record: ReplicaRecord, catalog: Catalog) -> float:
    accelerator = catalog.accelerators.get(record.accelerator)
    return (accelerator.price_per_hour if accelerator else 0.0) * record.tensor_parallel


@dataclass(frozen=True, slots=True)
class Ceiling:
    replicas: int
    why: str


def ceiling_replicas(
    request: CapacityRecord,
    unit: UnitCapacity,
    live: int,
    *,
    free_output_tps: float,
    tenant: Tenant | None,
    tenant_spend_elsewhere: float,
    tenant_accelerators_elsewhere: int,
) -> Ceiling:
    """The most replicas (of ``unit``) the request may have, and which limit binds."""
    # 5% tolerance on the fleet: a calibration factor a hair below 1 must not round a free slot away
    limits: list[tuple[float, str]] = [
        (live + free_output_tps / unit.output_tokens_per_s + 0.05, "free fleet capacity")
    ]
    auto = request.spec.autoscaling
    if auto.max_output_tokens_per_second is not None:
        limits.append((auto.max_output_tokens_per_second / unit.output_tokens_per_s, "max tokens/s"))
    if auto.max_spend_per_hour is not None and unit.cost_per_hour > 0:
        limits.append((auto.max_spend_per_hour / unit.cost_per_hour, "the request's budget"))
    if tenant is not None and tenant.max_spend_per_hour is not None and unit.cost_per_hour > 0:
        left = tenant.max_spend_per_hour - tenant_spend_elsewhere
        limits.append((left / unit.cost_per_hour, f"tenant {tenant.name}'s spend quota"))
    if tenant is not None and tenant.max_accelerators is not None and unit.tp > 0:
        left_devices = tenant.max_accelerators - tenant_accelerators_elsewhere
        limits.append((left_devices / unit.tp, f"tenant {tenant.name}'s accelerator quota"))
    value, why = min(limits, key=lambda item: item[0])
    return Ceiling(max(0, math.floor(value + EPS)), why)


def _best(options: Sequence[Option]) -> Option | None:
    return next((o for o in options if o.feasible), None)


# -- the live loop's part -------------------------------------------------------------------------


@dataclass
class _RequestState:
    policy_state: Any
    last_recorded: DecisionRecord | None = None


@dataclass
class Tick:
    """What the reconciler observed, as the autoscaler needs it."""

    now: datetime
    requests: Sequence[CapacityRecord]
    replicas: Sequence[ReplicaRecord]
    observed: Mapping[str, executor_pb2.ReplicaObservation]  # replica id -> this pass's observation
    fleet: Sequence[NodeSlot]
    calibration: Mapping[tuple[str, str], float] = field(default_factory=dict)


class LiveAutoscaler:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        *,
        settings: AutoscalerSettings | None = None,
        scheduler: SchedulerConfig | None = None,
        tenants: Callable[[str], Tenant | None] = lambda name: None,
        metrics: ControlPlaneMetrics | None = None,
        policy: Policy | None = None,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self.settings = settings or AutoscalerSettings()
        self._scheduler = scheduler or SchedulerConfig()
        self._tenants = tenants
        self.metrics = metrics or ControlPlaneMetrics()
        self.policy: Policy = policy or TokenfabPolicy(self.settings.policy)
        self._states: dict[str, _RequestState] = {}
        self._samples: dict[str, ReplicaSample] = {}  # replica id -> freshest metrics
        self._targets: dict[str, float] = {}
        self._last_tick = -math.inf
        self._forgotten_for: tuple[frozenset[str], frozenset[str]] | None = None
        self.mode = Mode.ACTIVE

    async def targets(self) -> dict[str, float]:
        """The applied targets (from etcd, so a new leader starts where the old one left off)."""
        kvs, _ = await self._store.list_prefix(keys.AUTOSCALER_TARGETS)
        found = {}
        for kv in kvs:
            target = AppliedTarget.model_validate_json(kv.value)
            found[target.request_id] = target.output_tokens_per_second
        self._targets = found
        return dict(found)

    @property
    def last_targets(self) -> dict[str, float]:
        """The targets as last read or written (for a pass whose autoscaler step failed)."""
        return dict(self._targets)

    async def read_mode(self) -> Mode:
        kv = await self._store.get(keys.AUTOSCALER_MODE)
        self.mode = ModeRecord.model_validate_json(kv.value).mode if kv is not None else Mode.ACTIVE
        return self.mode

    async def tick(self, tick: Tick) -> dict[str, float]:
        """Decide (when ``interval_s`` has passed), persist, and return the applied targets."""
        now_s = tick.now.timestamp()
        for replica_id, observation in tick.observed.items():
            if observation.state == "ready" and observation.HasField("stats"):
                self._samples[replica_id] = sample_of(
                    replica_id, observation.stats, now_s, self.settings.stats_window_s
                )
        if now_s - self._last_tick > 3 * self.settings.interval_s:
            # just started, or not leading for a while: another leader may have moved the targets
            # and the policies' memory on since; read them again from etcd (this instance is the
            # only writer while it leads, so between decisions its own copy is current)
            targets = await self.targets()
            self._states.clear()
            self._forgotten_for = None
        else:
            targets = dict(self._targets)
        if now_s - self._last_tick < self.settings.interval_s - EPS:
            return targets
        self._last_tick = now_s
        mode = await self.read_mode()
        offered = await self._gateway_demand()
        active = {r.id: r for r in tick.requests if r.active and r.spec.autoscaling.enabled}
        for gone in set(self._states) - set(active):
            self._states.pop(gone)
            self.metrics.forget_request(gone)
        live_ids = {r.id for r in tick.replicas if r.state in LIVE}
        for replica_id in set(self._samples) - live_ids:
            self._samples.pop(replica_id)
        requests_seen = (frozenset(r.id for r in tick.requests), frozenset(active))
        if requests_seen != self._forgotten_for:  # only when a request came, went or changed mode
            await self._forget_targets(tick, set(active))
            self._forgotten_for = requests_seen
        if mode is Mode.OFF:
            return {k: v for k, v in targets.items() if k in active}
        for request in active.values():
            try:
                target = await self._decide_one(
                    request, tick, mode, targets.get(request.id), offered.get(request.id)
                )
            except Exception as exc:  # one request's trouble must not stop the others
                self.metrics.reconcile_errors.labels(step="autoscale").inc()
                log.exception("autoscaler.failed", request=request.id, error=str(exc))
                continue
            if target is not None:
                targets[request.id] = target
        self._targets = {k: v for k, v in targets.items() if k in active}
        return dict(self._targets)

    async def _load_state(self, request_id: str) -> Any:
        """The policy's memory as the previous leader left it, or a fresh one."""
        decode = getattr(self.policy, "decode", None)
        if decode is None:
            return self.policy.initial()
        kv = await self._store.get(keys.autoscaler_state(request_id))
        if kv is None:
            return self.policy.initial()
        try:
            state = decode(json.loads(kv.value))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("autoscaler.state_unreadable", request=request_id, error=str(exc))
            return self.policy.initial()
        log.info("autoscaler.state_resumed", request=request_id)
        return state

    async def _save_state(self, request_id: str, state: Any) -> None:
        encode = getattr(self.policy, "encode", None)
        if encode is not None:
            await self._store.put(keys.autoscaler_state(request_id), json.dumps(encode(state)).encode())

    async def _forget_targets(self, tick: Tick, active: set[str]) -> None:
        """Targets and history of requests that are gone or no longer autoscaled."""
        known = {r.id for r in tick.requests}
        kvs, _ = await self._store.list_prefix(keys.AUTOSCALER_TARGETS)
        for kv in kvs:
            request_id = kv.key[len(keys.AUTOSCALER_TARGETS) :]
            if request_id not in active:
                await self._store.compare_and_delete(kv.key, expected_mod_revision=kv.mod_revision)
        states, _ = await self._store.list_prefix(keys.AUTOSCALER_STATE)
        for kv in states:
            if kv.key[len(keys.AUTOSCALER_STATE) :] not in active:
                await self._store.compare_and_delete(kv.key, expected_mod_revision=kv.mod_revision)
        history, _ = await self._store.list_prefix(keys.AUTOSCALER_HISTORY)
        for kv in history:
            request_id = kv.key[len(keys.AUTOSCALER_HISTORY) :].partition("/")[0]
            if request_id not in known:  # cancelled requests keep their history until they expire
                await self._store.compare_and_delete(kv.key, expected_mod_revision=kv.mod_revision)

    def _units(self, request: CapacityRecord, live: Sequence[ReplicaRecord], tick: Tick) -> tuple[
        Callable[[float, float], UnitCapacity], UnitCapacity, dict[str, float]
    ]:  # fmt: skip
        """The capacity callback for the policy, the unit at the declared mix, and free tokens/s."""
        types: dict[str, int] = {}
        for slot in tick.fleet:
            types[slot.accelerator] = max(types.get(slot.accelerator, 0), len(slot.devices))
        config = replace(self._scheduler, calibration=dict(tick.calibration))
        spec = request.spec

        def option_at(mean_in: float, mean_out: float) -> Option | None:
            latency = spec.latency
            workload = Workload(mean_in, mean_out, latency.ttft_p95_ms / 1000, latency.tpot_p95_ms / 1000)
            demand = replace(demand_of(request.id, spec), workload=workload)
            return _best(options_for(demand, self._catalog, types, config))

        declared = option_at(spec.mean_input_tokens, spec.mean_output_tokens)
        if declared is None:
            raise ValueError(f"no accelerator in the fleet serves {spec.model} at the request's latency")
        if live:
            # in the request's own replicas: their mean predicted tokens/s at the declared mix
            mean_tps = sum(r.predicted_output_tokens_per_second for r in live) / len(live)
            scale = mean_tps / declared.output_tokens_per_s
            cost = sum(replica_cost_per_hour(r, self._catalog) for r in live) / len(live)
            tp = round(sum(r.tensor_parallel for r in live) / len(live))
        else:
            scale, cost, tp = 1.0, declared.cost_per_hour, declared.tp
        accelerator = declared.accelerator if not live else "+".join(sorted({r.accelerator for r in live}))

        def predict(mean_in: float, mean_out: float) -> UnitCapacity | None:
            found = option_at(mean_in, mean_out)
            if found is None:
                return None
            return UnitCapacity(
                found.output_tokens_per_s * scale,
                found.input_tokens_per_s * scale,
                256,
                cost,
                accelerator,
                tp,
            )

        # the same capacity-by-mix the simulator uses (buckets, declared-mix fallback)
        capacity = CapacityByMix(predict, spec.mean_input_tokens, spec.mean_output_tokens)

        unit = UnitCapacity(
            declared.output_tokens_per_s * scale,
            declared.input_tokens_per_s * scale,
            256,
            cost,
            accelerator,
            tp,
        )
        return capacity, unit, {"next_replica_tps": declared.output_tokens_per_s}

    def _free_output_tps(self, request: CapacityRecord, tick: Tick) -> float:
        """What the free fleet could still place for this request (the scheduler, asked for a lot)."""
        placed = [
            PlacedReplica(
                r.id, r.request_id, r.node_id, r.accelerator, r.tensor_parallel, r.devices,
                r.predicted_output_tokens_per_second,
            )
            for r in tick.replicas
            if r.state in LIVE or r.state is S.DRAINING
        ]  # fmt: skip
        big: Demand = replace(
            demand_of(request.id + "/autoscale-probe", request.spec), target_output_tokens_per_s=1e9,
            target_input_tokens_per_s=0.0,
        )  # fmt: skip
        config = replace(self._scheduler, calibration=dict(tick.calibration))
        plan = schedule(tick.fleet, [big], placed, self._catalog, now=tick.now, config=config)
        return sum(p.output_tokens_per_s for rp in plan.requests for p in rp.placements)

    async def _gateway_demand(self) -> dict[str, GatewayDemand]:
        """What the gateways are offered per request, queue included (empty without a gateway)."""
        try:
            kvs, _ = await self._store.list_prefix(keys.GATEWAY_DEMAND)
        except Exception as exc:  # the engines' signals still serve
            log.warning("autoscaler.demand_unreadable", error=str(exc) or type(exc).__name__)
            return {}
        records = []
        for kv in kvs:
            with contextlib.suppress(ValueError):
                records.append(GatewayDemand.model_validate_json(kv.value))
        return combine(records)

    async def _decide_one(
        self, request: CapacityRecord, tick: Tick, mode: Mode, applied: float | None,
        offered: GatewayDemand | None = None,
    ) -> float | None:  # fmt: skip
        spec, auto = request.spec, request.spec.autoscaling
        mine = [r for r in tick.replicas if r.request_id == request.id]
        live = [r for r in mine if r.state in LIVE]
        if not live:
            # nothing to measure: the reconciler places the reserved floor; scaled to zero, a call
            # queued in the gateway wakes the request with its reserved floor (scale from zero)
            if offered is not None and offered.queued > 0 and applied is not None and applied <= EPS:
                log.info("autoscaler.wake", request=request.id, queued=offered.queued)
                return spec.output_tokens_per_second
            return applied
        ready = [r.id for r in live if r.state is S.READY]
        now_s = tick.now.timestamp()
        signals = aggregate(
            now_s, ready, [self._samples[r] for r in ready if r in self._samples],
            stale_after_s=self.settings.stale_after_s, queued=offered.queued if offered else 0,
        )  # fmt: skip
        if offered is not None and offered.offered_output_tokens_per_second > signals.output_tokens_per_s:
            # demand queued or refused at the gateway never reaches the engines: count it
            signals = replace(signals, output_tokens_per_s=offered.offered_output_tokens_per_second)
        capacity, unit, extra = self._units(request, live, tick)
        floor = floor_replicas(spec.output_tokens_per_second, unit.output_tokens_per_s)
        spend = accelerators = 0.0
        for r in tick.replicas:
            if r.tenant == request.tenant and r.request_id != request.id and r.state in LIVE:
                spend += replica_cost_per_hour(r, self._catalog)
                accelerators += r.tensor_parallel
        ceiling = ceiling_replicas(
            request, unit, len(live), free_output_tps=self._free_output_tps(request, tick),
            tenant=self._tenants(request.tenant), tenant_spend_elsewhere=spend,
            tenant_accelerators_elsewhere=int(accelerators),
        )  # fmt: skip
        cold_start = learned_cold_start_s(mine) or self.settings.default_cold_start_s
        ctx = build_context(
            request.id,
            signals,
            current=len(live),
            ready=len(ready),
            capacity=capacity,
            floor=floor,
            ceiling=ceiling.replicas,
            cold_start_s=cold_start,
            ttft_target_s=spec.latency.ttft_p95_ms / 1000,
            tpot_target_s=spec.latency.tpot_p95_ms / 1000,
            mean_input_tokens=spec.mean_input_tokens,
            mean_output_tokens=spec.mean_output_tokens,
            scale_to_zero=auto.scale_to_zero,
        )
        state = self._states.get(request.id)
        if state is None:
            state = self._states[request.id] = _RequestState(await self._load_state(request.id))
        started = time.perf_counter()
        decided = step(self.policy, ctx, state.policy_state, now_s)
        decision, state.policy_state = decided.decision, decided.state
        self.metrics.autoscaler_decide_seconds.observe(time.perf_counter() - started)
        await self._save_state(request.id, state.policy_state)
        if decision.desired >= ctx.ceiling and "capped at" in decision.reason:
            decision = replace(decision, reason=f"{decision.reason}; the ceiling is {ceiling.why}")
        advisory = mode is Mode.ADVISORY or auto.advisory
        previous = applied if applied is not None else spec.output_tokens_per_second
        if decision.action == "hold":
            # keep what was applied: re-deriving it from a drifting per-replica figure would flap
            new_target = previous if previous <= EPS else max(previous, spec.output_tokens_per_second)
        else:
            new_target = applied_target(
                decision.desired, unit.output_tokens_per_s, spec.output_tokens_per_second,
                scale_to_zero=auto.scale_to_zero,
            )  # fmt: skip
        changes = abs(new_target - previous) > 0.5
        record = DecisionRecord(
            request_id=request.id,
            at=tick.now,
            policy=self.policy.name,
            mode=Mode.ADVISORY if advisory else mode,
            applied=changes and not advisory,
            action=decision.action,
            current_replicas=decision.current,
            desired_replicas=decision.desired,
            reserved_output_tokens_per_second=spec.output_tokens_per_second,
            target_output_tokens_per_second=round(new_target if not advisory else previous, 1),
            reason=decision.reason,
            demand_output_tokens_per_second=_finite(decision.demand_output_tokens_per_s),
            forecast_output_tokens_per_second=_finite(decision.forecast_output_tokens_per_s),
            per_replica_output_tokens_per_second=_finite(decision.per_replica_output_tokens_per_s),
            predicted_utilisation=_finite(decision.predicted_utilisation),
            predicted_slo_ok=decision.predicted_slo_ok,
            cost_per_hour=_finite(decision.cost_per_hour),
            accelerator=unit.accelerator,
            inputs={
                k: round(v, 4)
                for k, v in {
                    **decision.inputs, **extra, "floor_replicas": float(floor),
                    "ceiling_replicas": float(ctx.ceiling), "cold_start_s": cold_start,
                }.items()
                if math.isfinite(v)
            },
        )  # fmt: skip
        self._export(request, decision, record)
        if changes and not advisory:
            await self._store.put(
                keys.autoscaler_target(request.id),
                AppliedTarget(
                    request_id=request.id, output_tokens_per_second=round(new_target, 3),
                    replicas=decision.desired, decided_at=tick.now, reason=decision.reason,
                ).model_dump_json().encode(),
            )  # fmt: skip
        if self._worth_recording(state.last_recorded, record, changes):
            await self._record(record)
            state.last_recorded = record
            log.info(
                "autoscaler.decision", request=request.id, action=record.action, mode=record.mode.value,
                applied=record.applied, current=record.current_replicas, desired=record.desired_replicas,
                target_tps=record.target_output_tokens_per_second, reason=record.reason,
            )  # fmt: skip
        if advisory:
            return applied
        return new_target

    def _worth_recording(self, last: DecisionRecord | None, new: DecisionRecord, changed: bool) -> bool:
        """Every change; otherwise only news: a new kind of reason, or a repeat after a while (a
        scale-up that cannot be placed yet would otherwise repeat itself every tick)."""
        if last is None or changed:
            return True
        same = (last.action, last.desired_replicas, last.mode) == (new.action, new.desired_replicas, new.mode)
        if not same or _gist(last.reason) != _gist(new.reason):
            return True
        return (new.at - last.at).total_seconds() >= self.settings.record_hold_every_s

    async def _record(self, record: DecisionRecord) -> None:
        at_ns = int(record.at.timestamp() * 1e9)
        await self._store.put(
            keys.autoscaler_decision(record.request_id, at_ns), record.model_dump_json().encode()
        )
        kvs, _ = await self._store.list_prefix(keys.autoscaler_history(record.request_id))
        excess = len(kvs) - self.settings.history_limit
        for kv in sorted(kvs, key=lambda kv: kv.key)[: max(0, excess)]:
            await self._store.compare_and_delete(kv.key, expected_mod_revision=kv.mod_revision)

    def _export(self, request: CapacityRecord, decision: ScalingDecision, record: DecisionRecord) -> None:
        m = self.metrics
        m.autoscaler_desired.labels(request=request.id).set(decision.desired)
        m.autoscaler_target.labels(request=request.id).set(record.target_output_tokens_per_second)
        if record.demand_output_tokens_per_second is not None:
            m.autoscaler_demand.labels(request=request.id).set(record.demand_output_tokens_per_second)
        if record.forecast_output_tokens_per_second is not None:
            m.autoscaler_forecast.labels(request=request.id).set(record.forecast_output_tokens_per_second)
        m.autoscaler_decisions.labels(action=record.action, mode=record.mode.value).inc()


def _gist(reason: str) -> str:
    """The kind of a reason, without its numbers: a hold whose figures drift is not news."""
    head = reason
    for stop in (";", ":", ",", "("):
        head = head.split(stop)[0]
    return "".join(c for c in head if not c.isdigit() and c != ".").strip()


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None
