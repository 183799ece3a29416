"""The reconciler's judgement of the fleet, as a decision: node state changes become events and
flapping nodes are quarantined. Purely computational: the memory of the last pass is passed in
and a new one is returned (the loop adopts it once the pass's writes landed), ``now`` is an
argument.

A node that comes back from Lost ``quarantine_after`` times within ``quarantine_window_s`` takes
no new replicas for ``quarantine_s`` (its slot turns unschedulable with the reason); the rules
of :mod:`controlplane.reconcile.decide` then move its replicas off make-before-break.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from controlplane.reconcile.learning import quarantined_until
from controlplane.reconcile.world import Event, ReconcileConfig
from controlplane.scheduler import NodeSlot


@dataclass(frozen=True, slots=True)
class NodeMemory:
    """What the leader remembers of the fleet between passes."""

    states: Mapping[str, str] = field(default_factory=dict)  # node id -> state at the last pass
    comebacks: Mapping[str, tuple[datetime, ...]] = field(default_factory=dict)  # back from Lost, when
    quarantined: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class NodeJudgement:
    fleet: tuple[NodeSlot, ...]  # quarantined nodes unschedulable, with the reason
    events: tuple[Event, ...]  # node_state and node_quarantined, to record once the pass commits
    memory: NodeMemory  # to adopt once the pass commits


def judge_nodes(
    fleet: Sequence[NodeSlot], memory: NodeMemory, now: datetime, cfg: ReconcileConfig
) -> NodeJudgement:
    """One look at every node against the last pass (purely computational, no side effects)."""
    states = dict(memory.states)
    comebacks = dict(memory.comebacks)
    quarantined = set(memory.quarantined)
    events: list[Event] = []
    out: list[NodeSlot] = []
    for slot in fleet:
        before = states.get(slot.node_id)
        if before is not None and before != slot.state:
            events.append(Event("node_state", f"{before} -> {slot.state}", node_id=slot.node_id))
            if before == "lost":  # a comeback
                comebacks[slot.node_id] = (*comebacks.get(slot.node_id, ()), now)
        states[slot.node_id] = slot.state
        until = quarantined_until(comebacks.get(slot.node_id, ()), now, cfg)
        if until is not None and until > now:
            if slot.node_id not in quarantined:  # newly quarantined: said once
                quarantined.add(slot.node_id)
                events.append(Event(
                    "node_quarantined",
                    f"came back from Lost {len(comebacks[slot.node_id])} times; "
                    f"no new replicas until {until.isoformat(timespec='seconds')}",
                    node_id=slot.node_id,
                ))  # fmt: skip
            why = f"quarantined until {until.isoformat(timespec='seconds')} (flapping)"
            slot = replace(slot, schedulable=False, quarantined_until=until, unschedulable_reason=why)
        else:
            quarantined.discard(slot.node_id)
        out.append(slot)
    return NodeJudgement(tuple(out), tuple(events), NodeMemory(states, comebacks, frozenset(quarantined)))
