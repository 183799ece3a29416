"""Discrete-event autoscaling simulator: a trace, a fleet, a policy, a simulated clock.

The simulator drives the *same* policy code as the live reconcile loop and the *same*
scheduler to place new replicas (cheapest type that meets the SLO on the fleet's free nodes).
Replicas are :class:`~controlplane.executor.simengine.SimEngine` instances (continuous batching
at the performance model's rates, KV-cache admission), which become Ready ``cold_start_s`` after
they are asked for. A router sends each request to the Ready replica with the fewest outstanding
tokens; with no Ready replica it queues in front (scale from zero). Every ``tick_s`` each replica
reports its metrics, the policy decides, and the decision is applied: new replicas placed by the
scheduler, surplus ones drained (no new requests; stopped once empty).

Accounting: a replica costs from the moment it is asked for (cold start included) until it has
drained; ``accelerator_hours`` = devices x those hours. A request meets the SLO when its TTFT
(queueing included) and its TPOT are both within the targets (the TTFT target may grow with the
prompt: :class:`~controlplane.autoscale.feasibility.TtftTarget`). Requests that no allowed replica
shape could serve within the SLO (beyond the model's context or every KV cache, or a prompt no
shape prefills within its TTFT target) are *infeasible*: never routed, counted apart with their
reason, and left out of the attainment. Feasible requests that do not fit the serving replicas'
KV cache, and requests still unfinished at the end, count as misses. ``fleet_capped_s`` is the
time a policy asked for more replicas than the fleet could place.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from controlplane.autoscale.context import CapacityByMix, bucket_mix, build_context, mix_bucket, step
from controlplane.autoscale.feasibility import Feasibility, TtftTarget, feasibility_for
from controlplane.autoscale.policy import DEFAULT_MAX_CONCURRENCY, Policy, ScalingDecision, UnitCapacity
from controlplane.autoscale.signals import ReplicaSample, aggregate
from controlplane.catalog import Catalog, Dtype, Workload
from controlplane.catalog.perf import EngineProfile, prefill_chunk_tokens
from controlplane.executor.simengine import SimEngine, SimRequest
from controlplane.scheduler import Demand, NodeSlot, PlacedReplica, SchedulerConfig, schedule
from controlplane.scheduler.core import options_for
from controlplane.simulate.result import Point, SimResult
from controlplane.simulate.sizing import warm_replicas
from controlplane.simulate.trace import Trace

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Scenario:
    model: str
    nodes: tuple[NodeSlot, ...]
    ttft_target_s: float = 2.0
    tpot_target_s: float = 0.1
    cold_start_s: float = 60.0
    tick_s: float = 5.0
    metrics_window_s: float = 10.0
    min_replicas: int = 1
    max_replicas: int = 1_000
    mean_input_tokens: float = 1024.0  # the request's declared mix (engine sizing, first estimate)
    mean_output_tokens: float = 256.0
    p95_input_tokens: float = 0.0  # the declared mix's tail (of feasible requests); 0: the mean
    p95_output_tokens: float = 0.0
    dtype: Dtype = Dtype.BF16
    scale_to_zero: bool = False
    initial_replicas: int = 0  # 0: sized for the trace's first minute (warm start)
    ttft_prompt_tokens_per_s: float = 0.0  # > 0: length-aware TTFT target, base + prompt / rate


def outstanding_tokens(engine: SimEngine) -> int:
    """Tokens still to process on an engine (the router's load measure)."""
    pending = sum(r.input_tokens - r.prefilled + r.output_tokens - r.generated for r in engine.running)
    return pending + sum(r.input_tokens + r.output_tokens for r in engine.waiting)


@dataclass
class _Replica:
    replica_id: str
    accelerator: str
    tp: int
    node_id: str
    devices: tuple[int, ...]
    price_per_hour: float  # whole replica
    engine: SimEngine
    asked_at: float
    ready_at: float
    draining: bool = False
    stopped_at: float | None = None

    def outstanding(self) -> int:
        return outstanding_tokens(self.engine)

    def idle(self) -> bool:
        return not self.engine.running and not self.engine.waiting


class Simulator:
    def __init__(
        self, scenario: Scenario, catalog: Catalog, *, scheduler: SchedulerConfig | None = None
    ) -> None:
        self.scenario = scenario
        self.catalog = catalog
        self.scheduler = scheduler or SchedulerConfig(min_lease_remaining_s=0.0)
        self._types: dict[str, int] = {}
        for node in scenario.nodes:
            self._types[node.accelerator] = max(self._types.get(node.accelerator, 0), len(node.devices))
        self._capacity: CapacityByMix | None = None
        self._options_cache: dict[tuple[int, int], dict[str, tuple[float, float]]] = {}
        self.declared = self.capacity(scenario.mean_input_tokens, scenario.mean_output_tokens)
        self._declared_options = self._options_cache[
            self._key(scenario.mean_input_tokens, scenario.mean_output_tokens)
        ]
        self._feasibility: Feasibility | None = None

    @property
    def ttft(self) -> TtftTarget:
        s = self.scenario
        return TtftTarget(s.ttft_target_s, s.ttft_prompt_tokens_per_s)

    @property
    def feasibility(self) -> Feasibility:
        """What the fleet's shapes can serve at all (computed once, on first use)."""
        if self._feasibility is None:
            s = self.scenario
            self._feasibility = feasibility_for(
                self.catalog, s.model, self._types, self.ttft, dtype=s.dtype,
                assumptions=self.scheduler.assumptions,
            )  # fmt: skip
        return self._feasibility

    def new_engine(self, accelerator: str, tp: int, now: float) -> SimEngine:
        """An engine of this shape, with the prefill chunk the live launch would give it."""
        s = self.scenario
        profile = EngineProfile.of(
            self.catalog.model(s.model),
            self.catalog.accelerator(accelerator),
            tp,
            s.dtype,
            self.scheduler.assumptions,
        )
        return SimEngine(profile, chunk_tokens=self._chunk_tokens(accelerator, tp), now=now)

    def misses(self, request: SimRequest) -> bool:
        """Whether a finished (or given-up) request missed its TTFT or TPOT target."""
        ttft = request.ttft_s
        if ttft is None or ttft > self.ttft.for_prompt(request.input_tokens):
            return True
        tpot = request.tpot_s
        return tpot is not None and tpot > self.scenario.tpot_target_s

    # -- performance model, as the live autoscaler sees it -------------------------------
    def _demand(self, mean_in: float, mean_out: float, target: float = 1.0) -> Demand:
        s = self.scenario
        return Demand(
            request_id="sim",
            model=s.model,
            target_output_tokens_per_s=target,
            workload=Workload(
                mean_in,
                mean_out,
                s.ttft_target_s,
                s.tpot_target_s,
                input_tokens_p95=s.p95_input_tokens,
                output_tokens_p95=s.p95_output_tokens,
                ttft_tail_s=self.ttft.for_prompt(round(s.p95_input_tokens)),
            ),
            dtype=s.dtype,
        )

    @staticmethod
    def _key(mean_in: float, mean_out: float) -> tuple[int, int]:
        return mix_bucket(mean_in, mean_out)

    def capacity(self, mean_in: float, mean_out: float) -> UnitCapacity:
        """Per-replica capacity at a mix, as the live autoscaler computes it (CapacityByMix)."""
        if self._capacity is None:
            s = self.scenario
            capacity = CapacityByMix(self._predict, s.mean_input_tokens, s.mean_output_tokens)
            try:
                _ = capacity.declared
            except ValueError:
                options = options_for(
                    self._demand(s.mean_input_tokens, s.mean_output_tokens), self.catalog, self._types,
                    self.scheduler,
                )  # fmt: skip
                reasons = "; ".join(f"{o.accelerator}: {o.reason}" for o in options)
                raise ValueError(
                    f"no accelerator in the fleet serves {s.model} at the SLO ({reasons})"
                ) from None
            self._capacity = capacity
        return self._capacity(mean_in, mean_out)

    def _predict(self, mean_in: float, mean_out: float) -> UnitCapacity | None:
        """The fleet's best option at a mix (None when none serves it within the SLO); the
        per-type figures are kept for placing new replicas."""
        options = options_for(self._demand(mean_in, mean_out), self.catalog, self._types, self.scheduler)
        usable = [o for o in options if o.feasible]
        if not usable:
            return None
        best = usable[0]
        self._options_cache[self._key(mean_in, mean_out)] = {
            o.accelerator: (o.output_tokens_per_s, o.cost_per_hour) for o in usable
        }
        return UnitCapacity(
            best.output_tokens_per_s,
            best.input_tokens_per_s,
            DEFAULT_MAX_CONCURRENCY,
            best.cost_per_hour,
            best.accelerator,
            best.tp,
        )

    # -- the run ------------------------------------------------------------------------
    def run(
        self,
        trace: Trace,
        policy: Policy,
        *,
        progress: Callable[[float, float], None] | None = None,
        scored_from: float = 0.0,
    ) -> SimResult:
        """Replay ``trace`` under ``policy``. Requests arriving before ``scored_from`` and
        replica time before it are not scored (a warm-up: the policy has seen that traffic)."""
        wall = time.perf_counter()
        s = self.scenario
        replicas: list[_Replica] = []
        stopped: list[_Replica] = []
        queue: deque[SimRequest] = deque()  # in front of the replicas (no Ready replica)
        results: list[SimRequest] = []
        rejected = 0
        state = policy.initial()
        decisions: list[ScalingDecision] = []
        timeline: list[Point] = []
        counter = 0
        max_seen = 0
        end = trace.duration_s
        tick_in = tick_out = tick_arrived = 0
        capped_s, capped_at = 0.0, -math.inf
        kv_cap = self._kv_capacity()
        feasibility = self.feasibility
        infeasible: dict[str, int] = {}

        def launch(count: int, now: float, mean_in: float, mean_out: float) -> int:
            nonlocal counter
            live = [r for r in replicas if not r.draining]
            key = self._key(mean_in, mean_out)
            unit = self.capacity(mean_in, mean_out)
            per_type = self._options_cache.get(key, self._declared_options)
            existing = [
                PlacedReplica(
                    r.replica_id,
                    "sim",
                    r.node_id,
                    r.accelerator,
                    r.tp,
                    r.devices,
                    per_type.get(r.accelerator, (0.0, 0.0))[0],
                )
                for r in replicas
            ]
            have = sum(
                p.output_tokens_per_s for p, r in zip(existing, replicas, strict=True) if not r.draining
            )
            target = have + count * unit.output_tokens_per_s - 1e-6
            capped = len(live) + count > s.max_replicas
            if capped:
                count = max(0, s.max_replicas - len(live))
            if count <= 0:
                flag_capped(now)
                return 0
            plan = schedule(
                s.nodes,
                [self._demand(*bucket_mix(key), target)]
                if key in self._options_cache
                else [self._demand(s.mean_input_tokens, s.mean_output_tokens, target)],
                existing,
                self.catalog,
                now=_EPOCH,
                config=self.scheduler,
            )
            placed = 0
            for placement in plan.placements[:count]:
                counter += 1
                engine = self.new_engine(placement.accelerator, placement.tp, now)
                replicas.append(
                    _Replica(
                        f"r{counter}",
                        placement.accelerator,
                        placement.tp,
                        placement.node_id,
                        placement.devices,
                        placement.cost_per_hour,
                        engine,
                        now,
                        now + s.cold_start_s,
                    )
                )
                placed += 1
            if capped or any(r.status != "satisfied" for r in plan.requests):
                flag_capped(now)  # the fleet (or the replica ceiling) could not hold what was asked
            return placed

        def flag_capped(now: float) -> None:
            nonlocal capped_s, capped_at
            if now >= scored_from and now != capped_at:  # once per tick
                capped_s += s.tick_s
                capped_at = now

        def drain(count: int, now: float) -> int:
            # cold starts first (nothing to lose), then the Ready replicas with the least work
            live = [r for r in replicas if not r.draining]
            order = sorted(live, key=lambda r: (r.ready_at <= now, r.outstanding(), -r.price_per_hour))
            for replica in order[:count]:
                replica.draining = True
            return min(count, len(order))

        def ready(now: float) -> list[_Replica]:
            return [r for r in replicas if r.ready_at <= now and not r.draining]

        def route(request: SimRequest, now: float) -> None:
            candidates = ready(now)
            if not candidates:
                queue.append(request)
                return
            target = min(candidates, key=lambda r: r.outstanding())
            target.engine.submit(request)

        def advance(now: float) -> None:
            for replica in replicas:
                if replica.ready_at <= now:
                    if replica.engine.now < replica.ready_at:
                        replica.engine.now = replica.ready_at
                    replica.engine.advance(now)

        def reap(now: float) -> None:
            nonlocal replicas
            keep: list[_Replica] = []
            for replica in replicas:
                if replica.draining and (replica.ready_at > now or replica.idle()):
                    replica.stopped_at = max(now, replica.asked_at)
                    results.extend(replica.engine.pop_finished())
                    stopped.append(replica)
                else:
                    keep.append(replica)
            replicas = keep

        # Warm start, the same for every policy: the service ran before the trace begins, with
        # the replicas its first minute needs at the declared mix (never fewer than the floor).
        initial = max(s.min_replicas, s.initial_replicas or warm_replicas(trace, self.declared))
        launch(initial, -s.cold_start_s, s.mean_input_tokens, s.mean_output_tokens)
        for replica in replicas:
            replica.asked_at = 0.0
        next_tick = 0.0
        index = 0
        requests = trace.requests
        while index < len(requests) or next_tick <= end:
            arrival = requests[index].arrival_s if index < len(requests) else math.inf
            if arrival < next_tick:
                request = requests[index]
                index += 1
                sim = SimRequest(
                    f"q{index}", max(1, request.input_tokens), max(1, request.output_tokens), arrival
                )
                tick_in += sim.input_tokens
                tick_out += sim.output_tokens
                why = feasibility.check(sim.input_tokens, sim.output_tokens)
                if why is not None:
                    if arrival >= scored_from:
                        kind = why.partition(":")[0]
                        infeasible[kind] = infeasible.get(kind, 0) + 1
                    continue
                if arrival >= scored_from:
                    tick_arrived += 1
                if sim.input_tokens + sim.output_tokens > kv_cap:
                    if arrival >= scored_from:
                        rejected += 1
                    continue
                advance(arrival)
                route(sim, arrival)
                continue
            now = next_tick
            next_tick += s.tick_s
            advance(now)
            ready_now = ready(now)
            while queue and ready_now:
                route(queue.popleft(), now)
            reap(now)
            samples = []
            for replica in ready_now:
                m = replica.engine.metrics(s.metrics_window_s)
                results.extend(replica.engine.pop_finished(before=now - s.metrics_window_s))
                span = min(s.metrics_window_s, max(now, 1e-9))
                since = replica.engine.now - s.metrics_window_s  # as metrics() counts them
                done = [r for r in replica.engine.finished if r.finish_s is not None and r.finish_s >= since]
                samples.append(
                    ReplicaSample(
                        replica.replica_id,
                        now,
                        m.input_tokens_per_s,
                        m.output_tokens_per_s,
                        m.finished / min(s.metrics_window_s, max(now, 1e-9)),
                        m.running,
                        m.waiting,
                        m.kv_usage,
                        m.ttft_p95_s,
                        m.tpot_p95_s,
                        sum(r.input_tokens for r in done) / span,
                        sum(r.output_tokens for r in done) / span,
                    )
                )
            signals = aggregate(now, [r.replica_id for r in ready_now], samples, queued=len(queue))
            live = [r for r in replicas if not r.draining]
            ctx = build_context(
                "sim",
                signals,
                current=len(live),
                ready=len(ready_now),
                capacity=self.capacity,
                floor=s.min_replicas,
                ceiling=s.max_replicas,
                cold_start_s=s.cold_start_s,
                ttft_target_s=s.ttft_target_s,
                tpot_target_s=s.tpot_target_s,
                mean_input_tokens=s.mean_input_tokens,
                mean_output_tokens=s.mean_output_tokens,
                scale_to_zero=s.scale_to_zero,
            )
            decided = step(policy, ctx, state, now)
            decision, state = decided.decision, decided.state
            if decision.desired >= ctx.ceiling and "capped at" in decision.reason:
                flag_capped(now)  # clamped to the ceiling (policy.clamp), as the live path reports it
            if decision.desired != ctx.current:
                mean_in, mean_out = signals.mean_tokens(s.mean_input_tokens, s.mean_output_tokens)
                if decision.desired > ctx.current:
                    changed = launch(decision.desired - ctx.current, now, mean_in, mean_out)
                else:
                    changed = drain(ctx.current - decision.desired, now)
                    reap(now)
                if changed:
                    decisions.append(decision)
            live_after = [r for r in replicas if not r.draining]
            max_seen = max(max_seen, len(live_after))
            timeline.append(
                Point(
                    now,
                    tick_out / s.tick_s,
                    tick_in / s.tick_s,
                    sum(self._declared_tps(r) for r in ready_now),
                    len(ready_now),
                    len(replicas),
                    max(
                        tick_out / s.tick_s / self.declared.output_tokens_per_s,
                        tick_in / s.tick_s / self.declared.input_tokens_per_s,
                    ),
                    tick_arrived,
                )
            )
            tick_in = tick_out = tick_arrived = 0
            if progress is not None:
                progress(now, end)
        # finish the work in flight (no new arrivals), then stop everything
        horizon = end + 600.0
        while any(not r.idle() for r in replicas) or queue:
            now = next_tick
            next_tick += s.tick_s
            advance(now)
            ready_now = ready(now) or [r for r in replicas if r.ready_at <= now]
            while queue and ready_now:
                target = min(ready_now, key=lambda r: r.outstanding())
                target.engine.submit(queue.popleft())
            if now > horizon:
                break
        finish = max(end, next_tick - s.tick_s)
        for replica in replicas:
            replica.stopped_at = finish
            results.extend(replica.engine.pop_finished())
            stopped.append(replica)

        def hours(r: _Replica) -> float:
            return max(0.0, (r.stopped_at or finish) - max(r.asked_at, scored_from)) / 3600

        device_hours = sum(r.tp * hours(r) for r in stopped)
        cost = sum(r.price_per_hour * hours(r) for r in stopped)
        results = [r for r in results if r.arrival_s >= scored_from]
        scored = sum(1 for r in requests if r.arrival_s >= scored_from)
        ttft = self.ttft
        n_infeasible = sum(infeasible.values())
        unfinished = scored - n_infeasible - len(results) - rejected
        ttft_ok = [r for r in results if r.ttft_s is not None and r.ttft_s <= ttft.for_prompt(r.input_tokens)]
        tpot_ok = [r for r in results if r.tpot_s is None or r.tpot_s <= s.tpot_target_s]
        missed_at = [r.arrival_s for r in results if self.misses(r)]
        met = len(results) - len(missed_at)
        return SimResult(
            policy=policy.name,
            trace=trace.name,
            requests=scored,
            met=met,
            ttft_met=len(ttft_ok),
            tpot_met=len(tpot_ok),
            unfinished=unfinished,
            rejected=rejected,
            accelerator_hours=device_hours,
            cost=cost,
            scaling_actions=sum(1 for d in decisions if d.at >= scored_from),
            simulated_s=end - scored_from,
            wall_s=time.perf_counter() - wall,
            max_replicas=max((p.replicas for p in timeline if p.t >= scored_from), default=max_seen),
            timeline=[p for p in timeline if p.t >= scored_from],
            decisions=[d for d in decisions if d.at >= scored_from],
            missed_at=sorted(missed_at),
            infeasible=n_infeasible,
            infeasible_reasons=infeasible,
            fleet_capped_s=capped_s,
        )

    @functools.cache  # noqa: B019 - one simulator per run; a handful of (type, tp) keys
    def _chunk_tokens(self, accelerator: str, tp: int) -> int:
        """The engines' prefill chunk, sized to the TPOT target as the live launch does."""
        s = self.scenario
        workload = Workload(s.mean_input_tokens, s.mean_output_tokens, s.ttft_target_s, s.tpot_target_s)
        return prefill_chunk_tokens(
            self.catalog.model(s.model), self.catalog.accelerator(accelerator), tp, s.dtype, workload,
            self.scheduler.assumptions,
        )  # fmt: skip

    def _kv_capacity(self) -> int:
        unit = self.declared
        profile = EngineProfile.of(
            self.catalog.model(self.scenario.model),
            self.catalog.accelerator(unit.accelerator),
            unit.tp,
            self.scenario.dtype,
            self.scheduler.assumptions,
        )
        return profile.kv_capacity_tokens

    def _declared_tps(self, replica: _Replica) -> float:
        return self._declared_options.get(replica.accelerator, (0.0, 0.0))[0]
