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
(:class:`~controlplane.reconcile.rules.Working`); the rules live in
:mod:`controlplane.reconcile.rules`: ``move_replicas`` (rules 1, 2, 4), the departing set (rule
5, make), ``drain_surplus`` (3), ``place_deficit`` (6), ``announce_replacements``,
``retire_departing`` (5, break), ``stop_orphans``, ``set_statuses``. The decision's data types
are in :mod:`controlplane.reconcile.world`; what the loop learns from a pass besides the
decision (start times, calibration samples, quarantine ends) in
:mod:`controlplane.reconcile.learning`. The node judgement (state-change events, quarantine of
flapping nodes) is a decision of its own, in :mod:`controlplane.reconcile.nodes`.
"""

from __future__ import annotations

from collections.abc import Callable

from controlplane.catalog.types import Catalog
from controlplane.domain.replicas import LIVE, ReplicaRecord
from controlplane.reconcile.learning import (
    CalibrationSample,
    calibration_samples,
    learned_start_times,
    quarantined_until,
)
from controlplane.reconcile.rules import (
    Working,
    announce_replacements,
    departing_reason,
    drain_surplus,
    move_replicas,
    place_deficit,
    retire_departing,
    set_statuses,
    slots_by_node,
    stop_orphans,
)
from controlplane.reconcile.world import Decision, Event, ReconcileConfig, Seen, World

# the decision's vocabulary, re-exported: callers import it from here or from its own module
__all__ = [
    "CalibrationSample",
    "Decision",
    "Event",
    "ReconcileConfig",
    "Seen",
    "World",
    "calibration_samples",
    "decide",
    "learned_start_times",
    "quarantined_until",
]


def decide(
    world: World,
    catalog: Catalog,
    cfg: ReconcileConfig,
    *,
    new_id: Callable[[str], str],
    engine_for: Callable[[ReplicaRecord], str] = lambda r: r.engine,
) -> Decision:
    """The rules of the module docstring, in order, one function each. Purely computational."""
    p = Working()
    move_replicas(world, cfg, p)  # rules 1, 2 and 4, and expiry
    # rule 5, make: departing replicas keep serving but do not count towards the target
    slots = slots_by_node(world)
    p.departing = {
        r.id: why
        for r in p.current.values()
        if r.state in LIVE and (why := departing_reason(r, slots, world.now, cfg))
    }
    drain_surplus(world, catalog, p)  # rule 3
    by_request = place_deficit(world, catalog, cfg, p, new_id=new_id, engine_for=engine_for)  # rule 6
    announce_replacements(p)
    retire_departing(world, p, by_request)  # rule 5, break
    stop_orphans(world, p)
    set_statuses(world, p, by_request)
    return p.out
