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
3. runs the policy (the pure :func:`~controlplane.autoscale.context.step`; its state lives here,
   in memory, and in etcd: a new leader resumes it from there);
4. turns the desired replica count into an applied target in output tokens/s (never below the
   reserved one) that :func:`controlplane.reconcile.decide.decide` sizes the request for: the
   scheduler's cost logic picks the accelerator types, the surplus rule drains the least useful
   replicas;
5. persists the target, the policy memory and the decision (with its inputs, forecast, predicted
   utilisation and cost and a readable reason) before anything acts on it; history is bounded
   per request.

Inside the reconcile pass these are three steps, like the pass itself
(:mod:`controlplane.reconcile.loop`): :meth:`LiveAutoscaler.observe` reads (mode, gateway demand,
stored targets and policy memory) and writes nothing; :meth:`LiveAutoscaler.plan` is purely
computational and returns the targets, policy memory and history entries as data
(:class:`~controlplane.reconcile.passes.ScalePlan`); :meth:`LiveAutoscaler.commit` writes them
through the reconciler's store (the leader's fence) and only then updates the in-memory state,
for what landed. A request whose target did not land keeps its old one, and the reconciler
makes none of its replica writes that pass. :meth:`LiveAutoscaler.tick` runs the three at once.

Global mode (``/tokenfab/v1/autoscaler/mode``): ``active``; ``advisory`` decides and records but
applies nothing; ``off`` (the kill switch) does not decide at all. In both, applied targets stay
where they were: stopping the autoscaler never shrinks capacity by itself. A request with
``autoscaling.advisory`` is advisory on its own.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from controlplane.autoscale.context import build_context, floor_replicas, step
from controlplane.autoscale.policy import (
    Policy,
    TokenfabConfig,
    TokenfabPolicy,
    UnitCapacity,
)
from controlplane.autoscale.signals import ReplicaSample, aggregate
from controlplane.catalog.types import Catalog
from controlplane.domain.autoscaling import AppliedTarget, DecisionRecord, Mode, ModeRecord
from controlplane.domain.capacity import CapacityRecord
from controlplane.domain.demand import GatewayDemand, combine
from controlplane.domain.replicas import LIVE, ReplicaRecord, ReplicaState
from controlplane.domain.tenants import Tenant
from controlplane.metrics import ControlPlaneMetrics
from controlplane.reconcile.passes import ScalePlan, ScalerView, Verdict
from controlplane.reconcile.scaling import (
    applied_target,
    ceiling_replicas,
    finite,
    gist,
    learned_cold_start_s,
    replica_cost_per_hour,
    wake_record,
)
from controlplane.reconcile.sizing import free_output_tps, replica_units
from controlplane.reconcile.status import EPS
from controlplane.scheduler import NodeSlot, SchedulerConfig
from controlplane.store import keys
from controlplane.store.base import Fenced, Store
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
        """The applied targets as stored (a new leader starts where the old one left off). Reads only."""
        kvs, _ = await self._store.list_prefix(keys.AUTOSCALER_TARGETS)
        found = {}
        for kv in kvs:
            target = AppliedTarget.model_validate_json(kv.value)
            found[target.request_id] = target.output_tokens_per_second
        return found

    @property
    def last_targets(self) -> dict[str, float]:
        """The targets as last committed (for a pass whose autoscaler step failed)."""
        return dict(self._targets)

    async def read_mode(self) -> Mode:
        kv = await self._store.get(keys.AUTOSCALER_MODE)
        self.mode = ModeRecord.model_validate_json(kv.value).mode if kv is not None else Mode.ACTIVE
        return self.mode

    async def tick(self, tick: Tick, *, store: Store | None = None) -> dict[str, float]:
        """:meth:`observe`, :meth:`plan` and :meth:`commit` in one call (writing to ``store``, else
        the autoscaler's own); returns the applied targets. The reconciler runs the steps itself."""
        plan = self.plan(tick, await self.observe(tick))
        await self.commit(store or self._store, plan)
        return self.last_targets

    # -- step 1: observe (reads only) -----------------------------------------------------------

    async def observe(self, tick: Tick) -> ScalerView:
        """What this pass needs from the store: the applied targets after a gap, the mode, the
        gateways' demand, the policy memory of requests this instance has none for, and the keys
        of requests gone. Writes nothing; the engines' metrics join the in-memory samples."""
        now_s = tick.now.timestamp()
        for replica_id, observation in tick.observed.items():
            if observation.state == "ready" and observation.HasField("stats"):
                self._samples[replica_id] = sample_of(
                    replica_id, observation.stats, now_s, self.settings.stats_window_s
                )
        # just started, or not leading for a while: another leader may have moved the targets and
        # the policies' memory on since; read them again (this instance is the only writer while
        # it leads, so between decisions its own copy is current)
        reset = now_s - self._last_tick > 3 * self.settings.interval_s
        targets = await self.targets() if reset else dict(self._targets)
        if now_s - self._last_tick < self.settings.interval_s - EPS:
            return ScalerView(now_s, due=False, reset=reset, targets=targets)
        mode = await self.read_mode()
        offered = await self._gateway_demand()
        active = {r.id for r in tick.requests if r.active and r.spec.autoscaling.enabled}
        live_ids = {r.id for r in tick.replicas if r.state in LIVE}
        for replica_id in set(self._samples) - live_ids:
            self._samples.pop(replica_id)
        stored: dict[str, Any] = {}
        if mode is not Mode.OFF:
            measured = {r.request_id for r in tick.replicas if r.state in LIVE}
            for request_id in sorted(active & measured):
                if reset or request_id not in self._states:
                    stored[request_id] = await self._load_state(request_id)
        seen = (frozenset(r.id for r in tick.requests), frozenset(active))
        forget: tuple[tuple[str, int], ...] = ()
        if seen != (None if reset else self._forgotten_for):  # a request came, went or changed mode
            forget = await self._stale_keys(seen[0], seen[1])
        return ScalerView(now_s, True, reset, targets, mode, offered, stored, forget, seen)

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

    async def _stale_keys(self, known: frozenset[str], active: frozenset[str]) -> tuple[tuple[str, int], ...]:
        """Targets, state and history of requests that are gone or no longer autoscaled, with the
        revisions read (cancelled requests keep their history until they expire)."""
        out = []
        for prefix, keep in ((keys.AUTOSCALER_TARGETS, active), (keys.AUTOSCALER_STATE, active)):
            kvs, _ = await self._store.list_prefix(prefix)
            out += [(kv.key, kv.mod_revision) for kv in kvs if kv.key[len(prefix) :] not in keep]
        history, _ = await self._store.list_prefix(keys.AUTOSCALER_HISTORY)
        for kv in history:
            if kv.key[len(keys.AUTOSCALER_HISTORY) :].partition("/")[0] not in known:
                out.append((kv.key, kv.mod_revision))
        return tuple(out)

    # -- step 2: plan (purely computational) ------------------------------------------------------

    def plan(self, tick: Tick, view: ScalerView) -> ScalePlan:
        """Each autoscaled request's decision as data (:class:`Verdict`), and the targets the
        replica rules size for if its writes land. No store, no memory changed: :meth:`commit`
        writes and then remembers what landed."""
        active = {r.id: r for r in tick.requests if r.active and r.spec.autoscaling.enabled}
        if not view.due:
            return ScalePlan(view, view.targets, view.targets)
        previous = {k: v for k, v in view.targets.items() if k in active}
        if view.mode is Mode.OFF:
            return ScalePlan(view, previous, previous)
        targets, verdicts = dict(previous), []
        for request in active.values():
            memory = None if view.reset else self._states.get(request.id)
            try:
                verdict = self._decide_one(request, tick, view, memory, previous.get(request.id))
            except Exception as exc:  # one request's trouble must not stop the others
                self.metrics.reconcile_errors.labels(step="autoscale").inc()
                log.exception("autoscaler.failed", request=request.id, error=str(exc))
                continue
            verdicts.append(verdict)
            if verdict.target is not None:
                targets[request.id] = verdict.target
        return ScalePlan(view, previous, targets, tuple(verdicts))

    # -- step 3: commit (writes, then memory for what landed) ---------------------------------------

    async def commit(self, store: Store, plan: ScalePlan) -> frozenset[str]:
        """Write the plan (``store``: the reconciler's, fenced when it has a fence): the stale
        keys, then per request its policy memory and applied target, then its history entry.
        Fenced propagates (a successor leads: nothing here is remembered). Any other failure
        costs only that request: its target stays what it was. Returns the requests whose
        state or target did not land; the in-memory state follows what did."""
        forgot = True
        for key, revision in plan.view.forget:
            try:
                await store.compare_and_delete(key, expected_mod_revision=revision)
            except Fenced:
                raise
            except Exception as exc:  # tried again on the next decision
                forgot = False
                log.warning("autoscaler.forget_failed", key=key, error=str(exc) or type(exc).__name__)
        failed: set[str] = set()
        unrecorded: set[str] = set()
        for verdict in plan.verdicts:
            request_id = verdict.request_id
            try:
                if verdict.state_json is not None:
                    await store.put(keys.autoscaler_state(request_id), verdict.state_json)
                if verdict.write is not None:
                    await store.put(
                        keys.autoscaler_target(request_id), verdict.write.model_dump_json().encode()
                    )
            except Fenced:
                raise
            except Exception as exc:
                self.metrics.reconcile_errors.labels(step="autoscale").inc()
                log.warning(
                    "autoscaler.write_failed", request=request_id, error=str(exc) or type(exc).__name__
                )
                failed.add(request_id)
                continue
            if verdict.record is not None and verdict.news:
                try:
                    await self._record(verdict.record, store=store)
                except Fenced:
                    raise
                except Exception as exc:  # the target stands; the entry is news again next time
                    log.warning(
                        "autoscaler.record_failed", request=request_id, error=str(exc) or type(exc).__name__
                    )
                    unrecorded.add(request_id)
        self._remember(plan, failed, unrecorded, forgot=forgot)
        return frozenset(failed)

    def _remember(self, plan: ScalePlan, failed: set[str], unrecorded: set[str], *, forgot: bool) -> None:
        view = plan.view
        if view.reset:
            self._states.clear()
            self._forgotten_for = None
        targets = dict(plan.targets)
        for request_id in failed:  # what stands is what was there
            if request_id in plan.previous:
                targets[request_id] = plan.previous[request_id]
            else:
                targets.pop(request_id, None)
        self._targets = targets
        if not view.due:
            return
        self._last_tick = view.at
        if view.seen is not None:
            for gone in set(self._states) - view.seen[1]:
                self._states.pop(gone)
                self.metrics.forget_request(gone)
            if forgot:
                self._forgotten_for = view.seen
        for verdict in plan.verdicts:
            if verdict.request_id in failed or verdict.record is None:
                continue
            record = verdict.record
            state = self._states.setdefault(verdict.request_id, _RequestState(verdict.state))
            state.policy_state = verdict.state
            self._export(record, verdict.desired)
            if verdict.news and verdict.request_id not in unrecorded:
                state.last_recorded = record
                log.info(
                    "autoscaler.decision", request=record.request_id, action=record.action,
                    mode=record.mode.value, applied=record.applied, current=record.current_replicas,
                    desired=record.desired_replicas, target_tps=record.target_output_tokens_per_second,
                    reason=record.reason,
                )  # fmt: skip

    def _units(self, request: CapacityRecord, live: Sequence[ReplicaRecord], tick: Tick) -> tuple[
        Callable[[float, float], UnitCapacity], UnitCapacity, dict[str, float]
    ]:  # fmt: skip
        """The capacity callback for the policy, the unit at the declared mix, and the next replica's
        tokens/s (:func:`~controlplane.reconcile.sizing.replica_units`)."""
        return replica_units(request, live, tick.fleet, tick.calibration, self._catalog, self._scheduler)

    def _free_output_tps(self, request: CapacityRecord, tick: Tick) -> float:
        """What the free fleet could still place for this request (the scheduler, asked for a lot)."""
        return free_output_tps(
            request, tick.replicas, tick.fleet, tick.calibration, self._catalog, self._scheduler, now=tick.now
        )

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

    def _decide_one(
        self, request: CapacityRecord, tick: Tick, view: ScalerView, memory: _RequestState | None,
        applied: float | None,
    ) -> Verdict:  # fmt: skip
        """One request's verdict, purely computational (the policy's step, the target, the record)."""
        spec, auto = request.spec, request.spec.autoscaling
        offered = view.offered.get(request.id)
        mine = [r for r in tick.replicas if r.request_id == request.id]
        live = [r for r in mine if r.state in LIVE]
        if not live:
            # nothing to measure: the reconciler places the reserved floor; scaled to zero, a call
            # queued in the gateway wakes the request with its reserved floor (scale from zero)
            if offered is not None and offered.queued > 0 and applied is not None and applied <= EPS:
                return self._wake(request, tick, view, memory, offered)
            return Verdict(request.id, applied, None)
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
        if memory is not None:
            policy_state = memory.policy_state
        else:
            policy_state = view.stored_states.get(request.id, self.policy.initial())
        started = time.perf_counter()
        decided = step(self.policy, ctx, policy_state, now_s)
        decision = decided.decision
        self.metrics.autoscaler_decide_seconds.observe(time.perf_counter() - started)
        encode = getattr(self.policy, "encode", None)
        state_json = json.dumps(encode(decided.state)).encode() if encode is not None else None
        if decision.desired >= ctx.ceiling and "capped at" in decision.reason:
            decision = replace(decision, reason=f"{decision.reason}; the ceiling is {ceiling.why}")
        advisory = view.mode is Mode.ADVISORY or auto.advisory
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
            mode=Mode.ADVISORY if advisory else view.mode,
            applied=changes and not advisory,
            action=decision.action,
            current_replicas=decision.current,
            desired_replicas=decision.desired,
            reserved_output_tokens_per_second=spec.output_tokens_per_second,
            target_output_tokens_per_second=round(new_target if not advisory else previous, 1),
            reason=decision.reason,
            demand_output_tokens_per_second=finite(decision.demand_output_tokens_per_s),
            forecast_output_tokens_per_second=finite(decision.forecast_output_tokens_per_s),
            per_replica_output_tokens_per_second=finite(decision.per_replica_output_tokens_per_s),
            predicted_utilisation=finite(decision.predicted_utilisation),
            predicted_slo_ok=decision.predicted_slo_ok,
            cost_per_hour=finite(decision.cost_per_hour),
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
        write = None
        if changes and not advisory:
            write = AppliedTarget(
                request_id=request.id, output_tokens_per_second=round(new_target, 3),
                replicas=decision.desired, decided_at=tick.now, reason=decision.reason,
            )  # fmt: skip
        return Verdict(
            request.id, applied if advisory else new_target, decided.state, state_json, write, record,
            news=self._worth_recording(memory.last_recorded if memory else None, record, changes),
            desired=decision.desired,
        )  # fmt: skip

    def _wake(
        self, request: CapacityRecord, tick: Tick, view: ScalerView, memory: _RequestState | None,
        offered: GatewayDemand,
    ) -> Verdict:  # fmt: skip
        """Scaled to zero, a call queued at the gateway: the reserved floor again, recorded."""
        state = memory.policy_state if memory else view.stored_states.get(request.id, self.policy.initial())
        advisory = view.mode is Mode.ADVISORY or request.spec.autoscaling.advisory
        record, write = wake_record(
            request, offered, self._units(request, [], tick)[1], at=tick.now, policy=self.policy.name,
            mode=view.mode, advisory=advisory,
        )  # fmt: skip
        log.info("autoscaler.wake", request=request.id, queued=offered.queued, advisory=advisory)
        target = 0.0 if advisory else request.spec.output_tokens_per_second
        return Verdict(
            request.id, target, state, None, write, record, news=True, desired=record.desired_replicas
        )

    def _worth_recording(self, last: DecisionRecord | None, new: DecisionRecord, changed: bool) -> bool:
        """Every change; otherwise only news: a new kind of reason, or a repeat after a while (a
        scale-up that cannot be placed yet would otherwise repeat itself every tick)."""
        if last is None or changed:
            return True
        same = (last.action, last.desired_replicas, last.mode) == (new.action, new.desired_replicas, new.mode)
        if not same or gist(last.reason) != gist(new.reason):
            return True
        return (new.at - last.at).total_seconds() >= self.settings.record_hold_every_s

    async def _record(self, record: DecisionRecord, *, store: Store | None = None) -> None:
        """Append one history entry and trim the request's history to ``history_limit``."""
        store = store or self._store
        at_ns = int(record.at.timestamp() * 1e9)
        await store.put(keys.autoscaler_decision(record.request_id, at_ns), record.model_dump_json().encode())
        kvs, _ = await store.list_prefix(keys.autoscaler_history(record.request_id))
        excess = len(kvs) - self.settings.history_limit
        for kv in sorted(kvs, key=lambda kv: kv.key)[: max(0, excess)]:
            await store.compare_and_delete(kv.key, expected_mod_revision=kv.mod_revision)

    def _export(self, record: DecisionRecord, desired: int) -> None:
        m, request_id = self.metrics, record.request_id
        m.autoscaler_desired.labels(request=request_id).set(desired)
        m.autoscaler_target.labels(request=request_id).set(record.target_output_tokens_per_second)
        if record.demand_output_tokens_per_second is not None:
            m.autoscaler_demand.labels(request=request_id).set(record.demand_output_tokens_per_second)
        if record.forecast_output_tokens_per_second is not None:
            m.autoscaler_forecast.labels(request=request_id).set(record.forecast_output_tokens_per_second)
        m.autoscaler_decisions.labels(action=record.action, mode=record.mode.value).inc()
