"""The node judgement (events, quarantine) and which events of a pass stand once it commits:
pure functions, memory in and out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from controlplane.domain.nodes import Vendor
from controlplane.domain.replicas import ReplicaState as S
from controlplane.reconcile.nodes import NodeMemory, judge_nodes
from controlplane.reconcile.passes import landed_events, landed_stops
from controlplane.reconcile.world import Decision, Event, ReconcileConfig
from controlplane.scheduler import NodeSlot
from tests.unit.test_reconcile import replica

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
CFG = ReconcileConfig(quarantine_after=2, quarantine_window_s=600, quarantine_s=900)


def slot(state: str) -> NodeSlot:
    return replace(NodeSlot("n1", "c1", "r1", Vendor.NVIDIA, "H100", ((0, 0),)), state=state)


def test_state_changes_become_events_and_the_memory_is_returned_not_kept() -> None:
    memory = NodeMemory()
    first = judge_nodes([slot("ready")], memory, NOW, CFG)
    assert first.events == () and first.memory.states == {"n1": "ready"}
    assert memory.states == {}  # the input is not edited
    second = judge_nodes([slot("lost")], first.memory, NOW, CFG)
    assert [(e.kind, e.message) for e in second.events] == [("node_state", "ready -> lost")]


def test_a_flapping_node_is_quarantined_once_and_unschedulable() -> None:
    memory = NodeMemory()
    t = NOW
    for state in ["ready", "lost", "ready", "lost", "ready"]:
        judged = judge_nodes([slot(state)], memory, t, CFG)
        memory, t = judged.memory, t + timedelta(seconds=10)
    assert [e.kind for e in judged.events] == ["node_state", "node_quarantined"]
    assert not judged.fleet[0].schedulable and "flapping" in judged.fleet[0].unschedulable_reason
    again = judge_nodes([slot("ready")], memory, t, CFG)
    assert again.events == ()  # said once
    assert not again.fleet[0].schedulable


def test_only_events_of_landed_moves_stand() -> None:
    failed = replica("a", S.FAILED)
    draining = replica("b", S.DRAINING)
    new = replica("c", S.PENDING)
    decision = Decision(
        updates=[failed, draining], creates=[new], stops=[draining, replica("d", S.DRAINING)],
        events=[
            Event("replica_failed", "x", "cr-1", "a"), Event("replacement_started", "y", "cr-1", "a"),
            Event("replica_retired", "z", "cr-1", "b"),
        ],
    )  # fmt: skip
    node = Event("node_state", "ready -> lost", node_id="n1")
    kept = landed_events(decision, [node], creates=[new], updates=[draining])
    assert [e.kind for e in kept] == ["node_state", "replica_retired"]
    assert [e.kind for e in landed_events(decision, [], creates=[], updates=[failed])] == ["replica_failed"]
    assert [r.id for r in landed_stops(decision, [failed])] == ["d"]  # b's move did not land
    assert [r.id for r in landed_stops(decision, [draining])] == ["b", "d"]
