"""The reconcile loop (leader only): observe -> decide -> commit -> act, every ``interval_s`` and
whenever a capacity request or a node's state changes. The shape of Ray's autoscaler v2
reconciler; what travels between the steps is in :mod:`controlplane.reconcile.passes`.

1. **Observe** (:meth:`Reconciler.observe`, passive, writes nothing): capacity requests and
   replica records from the store (with their revisions), the fleet from the registry, and from
   every cluster's executor its replica actors and Ray nodes. An executor that does not answer
   is counted and its cluster treated as unknown, never as empty.
2. **Decide** (:meth:`Reconciler.decide`): the node judgement (state-change events, quarantine of
   flapping nodes: :func:`controlplane.reconcile.nodes.judge_nodes`) and the replica rules
   (:func:`controlplane.reconcile.decide.decide`) are pure; calibration learns in memory and
   says what to persist. The autoscaler (:mod:`controlplane.reconcile.autoscaler`, every few
   seconds) is a decision too: its plan (targets, policy memory, history entries) is data, and
   the replica rules size each request for the target it plans.
3. **Commit** (:meth:`Reconciler.commit`): the autoscaler's writes first (a request whose
   target or policy memory does not land keeps its replicas as they are this pass: none of its
   creates, moves or status are written), then new replica records in one transaction, every
   transition and request status as a compare-and-swap on the revision it was read at, then the
   calibration and the events of what landed. A lost race skips that item (and its events); the
   next pass decides again from fresh reads. Returns :class:`~controlplane.reconcile.passes.Landed`;
   the Decision is never edited.
4. **Act** (:meth:`Reconciler.act`): only what landed. Pending replicas are started (the executor
   call is idempotent, so a crash between start and the Starting write just repeats the start);
   Draining replicas and orphan actors are stopped in the background, one stop per replica at a
   time.

Fenced: with ``fence`` (the election's), every write of the pass carries the leader's fence
(:mod:`controlplane.store.fenced`), and step 4 starts only after the store confirmed the fence
still holds. A leader paused mid-pass past its lease (SIGSTOP, a frozen VM) wakes up to writes
that fail with Fenced and acts on nothing: it cannot create a duplicate of what its successor
decided meanwhile.

Failures take their verdict from the error tree (:func:`tokenfab.errors.retry_after`): a pass that
fails with a temporary error (etcd away, an executor call that broke) is tried again after a
jittered exponential backoff; one a retry cannot fix (a bug, a refusal) is logged as an error and
the loop goes on at its pace with the next pass. Within a pass, an executor that does not answer,
a replica that does not start or stop, or an autoscaler step that fails costs only that item: it is
logged (a warning when temporary, an error when not) and retried on the next pass.

A restart changes nothing that runs: replica records and named detached actors outlive the
process, and the first pass after a restart finds every actor where its record says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from controlplane.capacity.snapshot import node_slots
from controlplane.catalog.perf import Calibration, Workload
from controlplane.catalog.types import Catalog
from controlplane.domain.capacity import CapacityRecord
from controlplane.domain.events import EventRecord
from controlplane.domain.replicas import LIVE, TERMINAL, ReplicaRecord, ReplicaState
from controlplane.executor.engines import EngineError
from controlplane.executor.service import Executor
from controlplane.fleet.events import EventLog
from controlplane.fleet.registry import NodeRegistry
from controlplane.metrics import ControlPlaneMetrics
from controlplane.reconcile.autoscaler import LiveAutoscaler, Tick
from controlplane.reconcile.decide import decide
from controlplane.reconcile.launch import EngineSettings, build_launch, engine_for
from controlplane.reconcile.learning import calibration_samples, learned_start_times
from controlplane.reconcile.nodes import NodeMemory, judge_nodes
from controlplane.reconcile.passes import Intent, Landed, Observed, landed_events, landed_stops
from controlplane.reconcile.world import ReconcileConfig, Seen, World
from controlplane.scheduler.demand import workload_of
from controlplane.store import keys
from controlplane.store.base import Fence, Fenced, Store
from controlplane.store.fenced import FencedStore
from controlplane.store.follow import follow
from tokenfab.errors import Backoff, is_temporary, retry_after
from tokenfab.logs import get_logger
from tokenfab.v1 import executor_pb2

log = get_logger("reconcile")
S = ReplicaState
OBSERVE_TIMEOUT_S = 10.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def new_replica_id(request_id: str) -> str:
    return f"{request_id}-{uuid.uuid4().hex[:6]}"


def _failed(event: str, exc: BaseException, **fields: object) -> None:
    """Log a step's failure by the error tree: a warning when a retry can help (the next pass
    tries again), an error (with the traceback) when it cannot."""
    error = str(exc) or type(exc).__name__
    if is_temporary(exc):
        log.warning(event, error=error, retryable=True, **fields)
    else:
        log.error(event, error=error, retryable=False, exc_info=exc, **fields)


class Reconciler:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        registry: NodeRegistry,
        executors: Mapping[str, Executor],
        *,
        interval_s: float = 1.0,
        config: ReconcileConfig | None = None,
        engines: EngineSettings | None = None,
        metrics: ControlPlaneMetrics | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        wall: Callable[[], datetime] = _utcnow,
        autoscaler: LiveAutoscaler | None = None,
        fence: Callable[[], Fence | None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff: Backoff | None = None,
    ) -> None:
        self._fenced = FencedStore(store, fence) if fence is not None else None
        self._store: Store = self._fenced or store
        self._catalog = catalog
        self._registry = registry
        self.executors = dict(executors)
        self.interval_s = interval_s
        self.config = config or ReconcileConfig()
        self.engines = engines or EngineSettings()
        self.metrics = metrics or ControlPlaneMetrics()
        self._is_leader = is_leader
        self.autoscaler = autoscaler
        self._wall = wall
        self._sleep = sleep
        self.backoff = backoff or Backoff(base_s=interval_s, cap_s=max(30.0, interval_s))
        self.observed: dict[str, executor_pb2.ReplicaObservation] = {}  # replica id -> latest
        self.passes = 0
        self.calibration = Calibration()
        self._persisted_factors: dict[tuple[str, str], float] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._workloads: dict[str, Workload] = {}  # request id -> mix and latency, for launches
        self._nodes = NodeMemory()  # the fleet as the last committed pass saw it
        self.replicas_by_node: dict[str, int] = {}  # live and draining replicas, after the last pass
        self.events = EventLog(self._store)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.load_calibration()
        self._tasks = [
            asyncio.create_task(self._run(), name="reconcile"),
            asyncio.create_task(
                follow(self._store, keys.CAPACITY_REQUESTS, lambda _e: self._wake.set(), what="requests"),
                name="reconcile-watch",
            ),
            asyncio.create_task(self._watch_nodes(), name="reconcile-nodes"),
        ]

    async def _watch_nodes(self) -> None:
        """A node turning suspect, lost or draining (or back) is acted on at once, not next pass."""
        states: dict[str, str] = {}
        async for _kind, view in self._registry.subscribe():
            state = view.state.value
            if states.get(view.node_id) != state:
                states[view.node_id] = state
                self._wake.set()

    async def stop(self) -> None:
        for task in [*self._tasks, *self._stopping.values()]:
            task.cancel()
        for task in [*self._tasks, *self._stopping.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks, self._stopping = [], {}

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            retry_in = await self.attempt() if self._is_leader() else None
            if retry_in is not None:  # a temporary failure: back off, whatever wakes the loop
                await self._sleep(retry_in)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):  # not wait_for: it can lose a cancel on 3.11
                    await self._wake.wait()
            self._wake.clear()

    async def attempt(self) -> float | None:
        """One pass and the error tree's verdict on it: None when the loop goes on at its pace
        (the pass ran, or failed in a way a retry cannot fix: logged as an error), else the
        seconds to wait before trying again (a temporary failure: the backoff's next step)."""
        started = time.perf_counter()
        retry_in: float | None = None
        try:
            await self.run_once()
        except asyncio.CancelledError:
            raise
        except Fenced as exc:  # a successor leads: this pass's writes changed nothing
            self.metrics.reconcile_errors.labels(step="fenced").inc()
            log.warning("reconcile.fenced", error=str(exc))
        except Exception as exc:  # never let one bad pass stop the loop
            retry_in = retry_after(exc, self.backoff)
            self.metrics.reconcile_errors.labels(step="pass").inc()
            if retry_in is None:
                log.error(
                    "reconcile.pass_failed",
                    error=str(exc) or type(exc).__name__,
                    retryable=False,
                    exc_info=exc,
                )
            else:
                log.warning(
                    "reconcile.pass_failed", error=str(exc) or type(exc).__name__, retryable=True,
                    retry_in_s=round(retry_in, 3),
                )  # fmt: skip
        else:
            self.backoff.reset()
        self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
        return retry_in

    # -- one pass: observe -> decide -> commit -> act -------------------------------------------

    async def _observe_cluster(
        self, cluster: str, executor: Executor
    ) -> tuple[str, list[executor_pb2.ReplicaObservation], executor_pb2.InventoryResponse] | None:
        try:
            actors, inventory = await asyncio.wait_for(
                asyncio.gather(executor.observe(), executor.inventory()), OBSERVE_TIMEOUT_S
            )
        except Exception as exc:  # the cluster is unknown this pass (never empty); asked again next pass
            self.metrics.executor_up.labels(cluster=cluster).set(0)
            self.metrics.reconcile_errors.labels(step="observe").inc()
            _failed("reconcile.executor_unreachable", exc, cluster=cluster)
            return None
        self.metrics.executor_up.labels(cluster=cluster).set(1)
        return cluster, actors, inventory

    async def observe(self) -> Observed:
        """Step 1, passive: the store's records (with their revisions), every executor's actors and
        Ray nodes, the registry's fleet. Writes nothing."""
        now = self._wall()
        request_kvs, _ = await self._store.list_prefix(keys.CAPACITY_REQUESTS)
        replica_kvs, _ = await self._store.list_prefix(keys.REPLICAS)
        # a record that does not load is skipped (the capacity API quarantines and shows it), never
        # the end of the pass for everyone else
        requests, request_rev = [], {}
        for kv in request_kvs:
            try:
                request = CapacityRecord.model_validate_json(kv.value)
            except ValueError:
                log.error("reconcile.request_unreadable", key=kv.key)
                continue
            requests.append(request)
            request_rev[request.id] = kv.mod_revision
        records, replica_rev = [], {}
        for kv in replica_kvs:
            try:
                replica = ReplicaRecord.model_validate_json(kv.value)
            except ValueError:
                log.error("reconcile.replica_unreadable", key=kv.key)
                continue
            records.append(replica)
            replica_rev[replica.id] = kv.mod_revision
        results = await asyncio.gather(*(self._observe_cluster(c, e) for c, e in self.executors.items()))
        actors_seen: dict[str, executor_pb2.ReplicaObservation] = {}
        seen: dict[str, dict[str, Seen]] = {}
        ray_nodes: dict[str, frozenset[str]] = {}
        for result in results:
            if result is None:
                continue
            cluster, actors, inventory = result
            seen[cluster] = {
                a.replica_id: Seen(
                    a.state, a.actor_id, a.endpoint, a.message, a.stats.output_tokens_per_second,
                    a.stats.waiting, a.stats.kv_cache_usage, a.stats.tpot_p95_s, a.stats.running,
                )
                for a in actors
            }  # fmt: skip
            ray_nodes[cluster] = frozenset(n.node_id for n in inventory.nodes if n.alive and n.node_id)
            actors_seen.update((a.replica_id, a) for a in actors)
        fleet = node_slots(self._registry.nodes())
        world = World(now, requests, records, fleet, seen, ray_nodes)
        scaler = None
        if self.autoscaler is not None:
            try:
                scaler = await self.autoscaler.observe(Tick(now, requests, records, actors_seen, fleet))
            except Exception as exc:  # the replica rules go on with the targets last committed
                self.metrics.reconcile_errors.labels(step="autoscale").inc()
                _failed("reconcile.autoscale_failed", exc, step="observe")
        return Observed(world, request_rev, replica_rev, actors_seen, scaler)

    async def decide(self, observed: Observed) -> Intent:
        """Step 2: what this pass should change. The node judgement (events, quarantine) and the
        replica rules are pure (:func:`judge_nodes`, :func:`decide`); calibration learns in memory
        and only says what to persist; the autoscaler plans its targets, policy memory and
        history entries (:meth:`LiveAutoscaler.plan`) and writes nothing."""
        world = observed.world
        nodes = judge_nodes(world.fleet, self._nodes, world.now, self.config)
        world = replace(world, fleet=list(nodes.fleet))
        calibration = self._learn(world)
        factors = dict(self.calibration.factors)
        scale = None
        if self.autoscaler is not None:
            if observed.scaler is not None:
                tick = Tick(world.now, world.requests, world.replicas, observed.actors, world.fleet, factors)
                try:
                    scale = self.autoscaler.plan(tick, observed.scaler)
                except Exception as exc:  # never fall back to the reserved targets: that would shrink
                    self.metrics.reconcile_errors.labels(step="autoscale").inc()
                    _failed("reconcile.autoscale_failed", exc, step="plan")
            targets = dict(scale.targets) if scale is not None else self.autoscaler.last_targets
            world = replace(world, targets=targets)
        config = replace(
            self.config,
            scheduler=replace(self.config.scheduler, calibration=factors),
            start_times=learned_start_times(world.replicas),
        )
        decision = decide(
            world, self._catalog, config, new_id=new_replica_id,
            engine_for=lambda r: engine_for(r, self._catalog, self.engines),
        )  # fmt: skip
        for note in decision.notes:
            log.info("reconcile.decision", note=note)
        return Intent(decision, nodes, calibration, scale)

    async def run_once(self) -> Landed:
        observed = await self.observe()
        self.observed.update(observed.actors)
        intent = await self.decide(observed)
        landed = await self.commit(intent, observed)
        self._nodes = intent.nodes.memory  # the events of these node changes are recorded
        self._workloads = {r.id: workload_of(r.spec) for r in observed.world.requests}
        if self._fenced is not None and not await self._fenced.holds():
            raise Fenced("leadership lost during the pass: nothing acted on")
        await self.act(landed, observed)
        self._export(observed.world.replicas, landed)
        self.passes += 1
        return landed

    async def commit(self, intent: Intent, observed: Observed) -> Landed:
        """Step 3: the writes, each a compare-and-swap on the revision it was read at (through the
        leader's fence when there is one). A lost race skips that item: the next pass decides
        again from fresh reads. Returns what landed; events are recorded for that only.

        The autoscaler's writes go first: a request whose target or policy memory did not land
        was sized for a target that is not there, so none of its replica writes are made."""
        decision, now = intent.decision, observed.world.now
        unscaled: frozenset[str] = frozenset()
        if intent.scale is not None and self.autoscaler is not None:
            unscaled = await self.autoscaler.commit(self._store, intent.scale)  # Fenced propagates
        replica_rev = dict(observed.replica_rev)
        before = {r.id: r for r in observed.world.replicas}
        creates: list[ReplicaRecord] = []
        to_create = [r for r in decision.creates if r.request_id not in unscaled]
        if to_create:
            items = [(keys.replica(r.id), r.model_dump_json().encode()) for r in to_create]
            revision = await self._store.create_all(items)
            if revision is None:
                self.metrics.reconcile_errors.labels(step="persist").inc()
            else:
                creates = to_create
                replica_rev.update((r.id, revision) for r in creates)
        updates: list[ReplicaRecord] = []
        for record in decision.updates:
            if record.request_id in unscaled:
                continue
            revision = await self._store.compare_and_put(
                keys.replica(record.id), record.model_dump_json().encode(),
                expected_mod_revision=replica_rev[record.id],
            )  # fmt: skip
            if revision is None:
                self.metrics.reconcile_errors.labels(step="persist").inc()
                continue
            replica_rev[record.id] = revision
            old = before[record.id].state
            if old is not record.state:
                self.metrics.replica_transitions.labels(
                    from_state=old.value, to_state=record.state.value
                ).inc()
            updates.append(record)
        expired = []
        for record in decision.expired:
            if await self._store.compare_and_delete(
                keys.replica(record.id), expected_mod_revision=replica_rev[record.id]
            ):
                expired.append(record.id)
        statuses = []
        for request_id, status in decision.statuses.items():
            if request_id in unscaled:
                continue
            kv = await self._store.get(keys.capacity_request(request_id))
            if kv is None or kv.mod_revision != observed.request_rev[request_id]:
                continue  # changed since we read it (an Update or Cancel): decide again next pass
            request = CapacityRecord.model_validate_json(kv.value).model_copy(update={"status": status})
            if await self._store.compare_and_put(
                keys.capacity_request(request_id), request.model_dump_json().encode(),
                expected_mod_revision=kv.mod_revision,
            ) is not None:  # fmt: skip
                statuses.append(request_id)
        if intent.calibration is not None:
            await self._store.put(keys.CALIBRATION, json.dumps(intent.calibration).encode())
            self._persisted_factors = dict(self.calibration.factors)
            log.info("reconcile.calibration", factors=intent.calibration)
        events = landed_events(decision, intent.nodes.events, creates=creates, updates=updates)
        if events:
            await self.events.append(
                *(
                    EventRecord(at=now, kind=e.kind, message=e.message, node_id=e.node_id,
                                request_id=e.request_id, replica_id=e.replica_id)
                    for e in events
                )
            )  # fmt: skip
            for e in events:
                if e.kind == "node_state":  # recorded for `tokenfab events`, not a failover step
                    continue
                self.metrics.failover_events.labels(kind=e.kind).inc()
                log.info(
                    "reconcile.event", kind=e.kind, node=e.node_id, replica=e.replica_id, message=e.message
                )
        return Landed(
            decision=decision,
            creates=tuple(creates),
            updates=tuple(updates),
            stops=landed_stops(decision, updates),
            orphans=tuple(decision.orphans),
            expired=tuple(expired),
            statuses=tuple(statuses),
            events=events,
            unscaled=unscaled,
            replica_rev=replica_rev,
        )

    async def act(self, landed: Landed, observed: Observed) -> None:
        """Step 4: only what landed. Pending replicas are started; Draining replicas and orphan
        actors are stopped in the background."""
        replica_rev = dict(landed.replica_rev)
        updated = {r.id: r for r in landed.updates}
        current = [updated.get(r.id, r) for r in observed.world.replicas] + list(landed.creates)
        pending = [r for r in current if r.state is S.PENDING]
        await asyncio.gather(*(self._start(r, replica_rev) for r in pending))
        for record in landed.stops:
            self._stop_later(record.cluster, record.id, drain_s=5.0)
        for cluster, name in landed.orphans:
            self._stop_later(cluster, name, drain_s=0.0)

    async def _start(self, record: ReplicaRecord, replica_rev: dict[str, int]) -> None:
        executor = self.executors.get(record.cluster)
        if executor is None:
            return
        try:
            launch = build_launch(record, self._catalog, self.engines, self._workloads.get(record.request_id))
        except (EngineError, KeyError, ValueError) as exc:
            await self._move(record, S.FAILED, f"cannot build the launch: {exc}", replica_rev)
            return
        try:
            await executor.start(launch)
        except Exception as exc:  # the record stays Pending: the next pass starts it again
            self.metrics.reconcile_errors.labels(step="start").inc()
            _failed("reconcile.start_failed", exc, replica=record.id, cluster=record.cluster)
            return
        await self._move(record, S.STARTING, "actor created", replica_rev)

    async def _move(
        self, record: ReplicaRecord, state: ReplicaState, reason: str, replica_rev: dict[str, int]
    ) -> None:
        moved = record.moved(state, reason, self._wall())
        revision = await self._store.compare_and_put(
            keys.replica(record.id), moved.model_dump_json().encode(),
            expected_mod_revision=replica_rev.get(record.id, 0),
        )  # fmt: skip
        if revision is not None:
            replica_rev[record.id] = revision
            self.metrics.replica_transitions.labels(from_state=record.state.value, to_state=state.value).inc()
            log.info("reconcile.replica", replica=record.id, state=state.value, reason=reason)

    def _stop_later(self, cluster: str, replica_id: str, *, drain_s: float) -> None:
        executor = self.executors.get(cluster)
        running = self._stopping.get(replica_id)
        if executor is None or (running is not None and not running.done()):
            return

        async def stop() -> None:
            try:
                await executor.stop(replica_id, drain_s)
            except Exception as exc:  # still Draining (or an orphan): the next pass stops it again
                self.metrics.reconcile_errors.labels(step="stop").inc()
                _failed("reconcile.stop_failed", exc, replica=replica_id)
            finally:
                self._stopping.pop(replica_id, None)
                self.observed.pop(replica_id, None)
                self._wake.set()

        self._stopping[replica_id] = asyncio.create_task(stop(), name=f"stop-{replica_id}")

    def _learn(self, world: World) -> dict[str, float] | None:
        """Calibration learns from this pass's busy replicas (in memory); returns the factors to
        persist when they moved by more than 1 %, else None."""
        for sample in calibration_samples(world):
            factor = self.calibration.observe(
                sample.model, sample.accelerator, predicted_tps=sample.predicted_tps,
                observed_tps=sample.observed_tps, saturated=sample.saturated,
            )  # fmt: skip
            self.metrics.calibration.labels(model=sample.model, accelerator=sample.accelerator).set(factor)
        changed = any(
            abs(f - self._persisted_factors.get(k, 1.0)) > 0.01 for k, f in self.calibration.factors.items()
        )
        if not changed:
            return None
        return {f"{m}|{a}": round(f, 4) for (m, a), f in sorted(self.calibration.factors.items())}

    async def load_calibration(self) -> None:
        """Factors learned before a restart (etcd), so placements do not forget them."""
        kv = await self._store.get(keys.CALIBRATION)
        if kv is None:
            return
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            for key, factor in json.loads(kv.value).items():
                model, _, accelerator = key.partition("|")
                self.calibration.factors[(model, accelerator)] = float(factor)
            self._persisted_factors = dict(self.calibration.factors)

    def _export(self, records: Sequence[ReplicaRecord], landed: Landed) -> None:
        final = {r.id: r for r in records}
        final.update({r.id: r for r in landed.updates})
        final.update({r.id: r for r in landed.creates})
        self.replicas_by_node = dict(
            Tally(r.node_id for r in final.values() if r.state in LIVE or r.state is S.DRAINING)
        )
        self.metrics.replicas.clear()
        for (accelerator, state), count in Tally(
            (r.accelerator, r.state.value) for r in final.values() if r.state not in TERMINAL
        ).items():
            self.metrics.replicas.labels(accelerator=accelerator, state=state).set(count)
        self.metrics.output_tokens.clear()
        served: defaultdict[tuple[str, str], float] = defaultdict(float)
        for record in final.values():
            observation = self.observed.get(record.id)
            if record.state is S.READY and observation is not None:
                served[(record.model, record.accelerator)] += observation.stats.output_tokens_per_second
        for (model, accelerator), tps in served.items():
            self.metrics.output_tokens.labels(model=model, accelerator=accelerator).set(tps)
