"""What one reconcile pass carries from step to step: what it observed, what it intends, and
what of that landed in the store. Data only, plus :func:`landed_events`, purely computational.

The split follows Ray's autoscaler v2 reconciler: a passive step mirrors the world
(:class:`Observed`), a pure step decides (:class:`Intent`), the commit returns what its
compare-and-swap writes actually changed (:class:`Landed`), and everything with a side effect
outside the store (executor calls, events, metrics) reads :class:`Landed` only, never the
Decision: a write that lost its race leaves no trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controlplane.domain.autoscaling import AppliedTarget, DecisionRecord, Mode
from controlplane.domain.demand import GatewayDemand
from controlplane.domain.replicas import ReplicaRecord
from controlplane.reconcile.nodes import NodeJudgement
from controlplane.reconcile.world import Decision, Event, World


@dataclass(frozen=True, slots=True)
class ScalerView:
    """The autoscaler's part of step 1: what it read from the store this pass.

    ``due``: its interval has passed, it decides this pass. ``reset``: it just started or has not
    led for a while, so its memory is dropped and ``targets`` and ``stored_states`` are the store's.
    ``forget``: keys (with the revisions read) of targets, policy state and history of requests
    that are gone or no longer autoscaled; ``seen`` is the request set they were computed for."""

    at: float
    due: bool
    reset: bool
    targets: Mapping[str, float]
    mode: Mode = Mode.ACTIVE
    offered: Mapping[str, GatewayDemand] = field(default_factory=dict)
    stored_states: Mapping[str, Any] = field(default_factory=dict)
    forget: tuple[tuple[str, int], ...] = ()
    seen: tuple[frozenset[str], frozenset[str]] | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One request's autoscaling decision as data: the target the replica rules size for, the
    policy memory to keep (``state``, and ``state_json`` to store), the applied target to write
    (None: unchanged or advisory), and the history entry to append (None: not news)."""

    request_id: str
    target: float | None
    state: Any
    state_json: bytes | None = None
    write: AppliedTarget | None = None
    record: DecisionRecord | None = None
    news: bool = False  # the record goes into the history
    desired: int = 0


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """The autoscaler's part of step 2, purely computational: ``targets`` is what the replica
    rules size for if every write lands; ``previous`` what stands for a request whose writes do
    not."""

    view: ScalerView
    previous: Mapping[str, float]
    targets: Mapping[str, float]
    verdicts: tuple[Verdict, ...] = ()


@dataclass(frozen=True, slots=True)
class Observed:
    """Step 1's result: the world, the revisions its records were read at, each actor's latest
    observation (``tokenfab.v1.executor_pb2.ReplicaObservation``) by replica id, and the
    autoscaler's reads (None: no autoscaler, or its reads failed)."""

    world: World
    request_rev: Mapping[str, int]
    replica_rev: Mapping[str, int]
    actors: Mapping[str, Any] = field(default_factory=dict)
    scaler: ScalerView | None = None


@dataclass(frozen=True, slots=True)
class Intent:
    """Step 2's result: the replica decision, the node judgement, the calibration factors to
    persist (None: unchanged), and the autoscaler's plan (None: none this pass)."""

    decision: Decision
    nodes: NodeJudgement
    calibration: dict[str, float] | None = None
    scale: ScalePlan | None = None


@dataclass(frozen=True, slots=True)
class Landed:
    """Step 3's result: what the store accepted. ``decision`` is the intent, unedited."""

    decision: Decision
    creates: tuple[ReplicaRecord, ...] = ()
    updates: tuple[ReplicaRecord, ...] = ()
    stops: tuple[ReplicaRecord, ...] = ()
    orphans: tuple[tuple[str, str], ...] = ()
    expired: tuple[str, ...] = ()  # replica ids deleted
    statuses: tuple[str, ...] = ()  # request ids whose status was written
    events: tuple[Event, ...] = ()
    unscaled: frozenset[str] = frozenset()  # requests whose autoscaler writes failed: left alone
    replica_rev: Mapping[str, int] = field(default_factory=dict)  # revisions after the commit


def landed_stops(decision: Decision, updates: Sequence[ReplicaRecord]) -> tuple[ReplicaRecord, ...]:
    """The stops to carry out: a replica whose Draining move was decided this pass is stopped only
    if the move landed; one already Draining (no move this pass) is asked again (stop is
    idempotent)."""
    moved = {r.id for r in decision.updates}
    landed = {r.id for r in updates}
    return tuple(r for r in decision.stops if r.id not in moved or r.id in landed)


def landed_events(
    decision: Decision,
    node_events: Sequence[Event],
    *,
    creates: Sequence[ReplicaRecord],
    updates: Sequence[ReplicaRecord],
) -> tuple[Event, ...]:
    """The events of this pass that describe something that happened (purely computational).

    Node events always stand (they describe what the registry shows). A replica's event stands
    when that replica's move landed (or the decision did not move it); a ``replacement_started``
    event also needs its request's new replicas to have been created (one transaction: all or
    none).
    """
    moved = {r.id for r in decision.updates}
    landed = {r.id for r in updates}
    replaced = {r.request_id for r in creates}
    out = list(node_events)
    for event in decision.events:
        if event.replica_id in moved and event.replica_id not in landed:
            continue
        if event.kind == "replacement_started" and event.request_id not in replaced:
            continue
        out.append(event)
    return tuple(out)
