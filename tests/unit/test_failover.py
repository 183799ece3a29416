"""Failover rules of the reconcile decision (pure): a Lost node's replicas fail at once and are
replaced in the same pass; a replica whose node's lease ends soon (or whose node drains) is
replaced first and retired only once the replacement is Ready (make-before-break)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta

from controlplane.domain.replicas import ReplicaState
from controlplane.reconcile.decide import ReconcileConfig, Seen, World, decide, learned_start_times
from controlplane.scheduler import NodeSlot
from tests.unit.test_reconcile import CATALOG, CFG, NOW, fleet, replica, request

S = ReplicaState


def world(replicas: list, slots: list[NodeSlot], ready: set[str] | None = None) -> World:
    seen = {r.id: Seen("ready") for r in replicas if r.state in (S.READY, S.DRAINING)}
    seen |= {r.id: Seen("starting") for r in replicas if r.state is S.STARTING}
    if ready:
        seen |= {rid: Seen("ready") for rid in ready}
    by_cluster: dict[str, dict[str, Seen]] = {"c1": {}, "c2": {}}
    for r in replicas:
        if r.id in seen:
            by_cluster[r.cluster][r.id] = seen[r.id]
    return World(
        NOW, [request(3000)], replicas, slots, by_cluster,
        {"c1": frozenset({"h100-0"}), "c2": frozenset({"br-0"})},
    )  # fmt: skip


def ids() -> object:
    counter = itertools.count()
    return lambda _r: f"new-{next(counter)}"


def with_node(slots: list[NodeSlot], node_id: str, **changes: object) -> list[NodeSlot]:
    return [replace(s, **changes) if s.node_id == node_id else s for s in slots]  # type: ignore[arg-type]


def test_a_lost_nodes_replica_fails_and_is_replaced_in_the_same_pass() -> None:
    old = replica("r1", S.READY, tps=3000, node="h100-0", age_s=3600)
    slots = with_node(fleet(), "h100-0", state="lost", schedulable=False, unschedulable_reason="lost")
    out = decide(world([old], slots), CATALOG, CFG, new_id=ids())
    (failed,) = out.updates
    assert failed.state is S.FAILED and "lost" in failed.reason
    assert [e.kind for e in out.events] == ["replica_lost", "replacement_started"]
    assert out.events[0].node_id == "h100-0" and out.creates[0].id in out.events[1].message
    assert out.creates and all(r.node_id == "br-0" for r in out.creates)


def test_a_failed_actor_is_an_event_too() -> None:
    old = replica("r1", S.READY, tps=3000, age_s=600)
    out = decide(world([old], fleet(), ready=set()), CATALOG, CFG, new_id=ids())
    out_gone = decide(
        World(NOW, [request(3000)], [old], fleet(), {"c1": {}, "c2": {}},
              {"c1": frozenset({"h100-0"}), "c2": frozenset({"br-0"})}),
        CATALOG, CFG, new_id=ids(),
    )  # fmt: skip
    assert not out.events  # still there: nothing happened
    assert [e.kind for e in out_gone.events] == ["replica_failed", "replacement_started"]


def test_a_lease_ending_soon_is_replaced_before_it_is_retired() -> None:
    old = replica("r1", S.READY, tps=3000, node="h100-0", age_s=3600)
    slots = with_node(fleet(), "h100-0", lease_end=NOW + timedelta(seconds=60))  # lead: 60 + 30 s
    first = decide(world([old], slots), CATALOG, CFG, new_id=ids())
    assert first.creates and all(r.node_id == "br-0" for r in first.creates)  # not the leaving node
    assert not [u for u in first.updates if u.id == "r1"]  # keeps serving meanwhile
    assert [e.kind for e in first.events] == ["replacement_started"]
    assert "lease of h100-0 ends" in first.events[0].message

    # the replacement is still starting: the old one stays
    starting = [r.model_copy(update={"state": S.STARTING}) for r in first.creates]
    waiting = decide(world([old, *starting], slots), CATALOG, CFG, new_id=ids())
    assert not waiting.creates and not [u for u in waiting.updates if u.id == "r1"]

    # Ready: the old one is retired (drained), with the reason
    ready = [r.model_copy(update={"state": S.READY}) for r in first.creates]
    retire = decide(world([old, *ready], slots), CATALOG, CFG, new_id=ids())
    (drained,) = [u for u in retire.updates if u.id == "r1"]
    assert drained.state is S.DRAINING and drained.reason.endswith("replaced")
    assert [e.kind for e in retire.events] == ["replica_retired"] and retire.stops == [drained]
    assert not retire.creates


def test_a_lease_that_ended_drains_even_without_a_replacement() -> None:
    old = replica("r1", S.READY, tps=3000, node="h100-0", age_s=3600)
    slots = with_node(fleet(), "h100-0", lease_end=NOW - timedelta(seconds=1))
    slots = with_node(slots, "br-0", schedulable=False, unschedulable_reason="cordoned")  # nowhere to go
    out = decide(world([old], slots), CATALOG, CFG, new_id=ids())
    (drained,) = [u for u in out.updates if u.id == "r1"]
    assert drained.state is S.DRAINING and "lease ended before a replacement was Ready" in drained.reason


def test_a_draining_node_is_left_make_before_break_and_far_leases_are_not() -> None:
    old = replica("r1", S.READY, tps=3000, node="h100-0", age_s=3600)
    draining = with_node(
        fleet(), "h100-0", state="draining", schedulable=False, unschedulable_reason="draining"
    )
    out = decide(world([old], draining), CATALOG, CFG, new_id=ids())
    assert out.creates and "draining" in out.events[0].message
    far = with_node(fleet(), "h100-0", lease_end=NOW + timedelta(hours=3))
    assert not decide(world([old], far), CATALOG, CFG, new_id=ids()).creates


def test_the_lead_time_is_learned_per_model_and_accelerator() -> None:
    slow = [
        replica(f"s{i}", S.READY, age_s=0).model_copy(update={"created_at": NOW - timedelta(seconds=300)})
        for i in range(3)
    ]
    learned = learned_start_times(slow)
    assert learned == {("qwen2.5-7b-instruct", "H100"): 300.0}
    old = replica("r1", S.READY, tps=3000, node="h100-0", age_s=3600)
    slots = with_node(fleet(), "h100-0", lease_end=NOW + timedelta(seconds=200))
    default = decide(world([old], slots), CATALOG, CFG, new_id=ids())
    assert not default.creates  # 200 s > 60 s start + 30 s margin: not yet
    cfg = ReconcileConfig(start_timeout_s=60, actor_grace_s=10, start_times=learned)
    assert decide(world([old], slots), CATALOG, cfg, new_id=ids()).creates  # 200 s < 300 + 30 s


def test_a_suspect_node_is_replaced_before_it_is_lost() -> None:
    old = replica("r1", S.READY, tps=3000, node="h100-0", age_s=3600)
    slots = with_node(fleet(), "h100-0", state="suspect", schedulable=False, unschedulable_reason="suspect")
    out = decide(world([old], slots), CATALOG, CFG, new_id=ids())
    assert out.creates and all(r.node_id == "br-0" for r in out.creates)
    assert not [u for u in out.updates if u.id == "r1"]  # it may come back: it keeps serving
    assert "suspect" in out.events[0].message


def test_a_replica_on_an_unhealthy_device_moves_make_before_break() -> None:
    old = replica("r1", S.READY, tps=3000, node="h100-0", devices=(1,), age_s=3600)
    slots = with_node(fleet(), "h100-0", devices=((0, 0),))  # device 1 reported an ECC/XID error
    out = decide(world([old], slots), CATALOG, CFG, new_id=ids())
    assert out.creates and "device 1 of h100-0 is unhealthy" in out.events[0].message
    assert not [u for u in out.updates if u.id == "r1"]


def test_flapping_nodes_are_quarantined_for_a_while() -> None:
    from controlplane.reconcile.decide import quarantined_until

    cfg = ReconcileConfig(quarantine_after=3, quarantine_window_s=600, quarantine_s=900)
    twice = [NOW - timedelta(seconds=300), NOW - timedelta(seconds=100)]
    assert quarantined_until(twice, NOW, cfg) is None
    thrice = [*twice, NOW]
    assert quarantined_until(thrice, NOW, cfg) == NOW + timedelta(seconds=900)
    old_ones = [NOW - timedelta(seconds=s) for s in (2000, 1500, 1000)]
    assert quarantined_until(old_ones, NOW, cfg) is None  # outside the window

    old = replica("r1", S.READY, tps=3000, node="h100-0", age_s=3600)
    slots = with_node(fleet(), "h100-0", schedulable=False, quarantined_until=NOW + timedelta(seconds=900))
    out = decide(world([old], slots), CATALOG, CFG, new_id=ids())
    assert out.creates and all(r.node_id == "br-0" for r in out.creates)
    assert "quarantined" in out.events[0].message


def test_the_disruption_budget_lets_a_drain_proceed_without_room_down_to_its_floor() -> None:
    both = [
        replica("r1", S.READY, tps=1500, node="h100-0", devices=(0,), age_s=3600),
        replica("r2", S.READY, tps=1500, node="h100-0", devices=(1,), age_s=3600),
    ]
    slots = with_node(fleet(), "h100-0", state="draining", schedulable=False, unschedulable_reason="draining")
    slots = with_node(slots, "br-0", schedulable=False, unschedulable_reason="cordoned")  # no room anywhere

    def retired(percent: float) -> list[str]:
        w = replace(world(both, slots), requests=[request(3000, max_unavailable_percent=percent)])
        out = decide(w, CATALOG, CFG, new_id=ids())
        assert not out.creates  # nowhere to place replacements
        gone = [u for u in out.updates if u.state is S.DRAINING]
        assert all("disruption budget" in u.reason for u in gone)
        return sorted(u.id for u in gone)

    assert retired(0) == []  # make-before-break only: the drain waits for room
    assert len(retired(50)) == 1  # 3000 -> 1500 tokens/s, the floor
    assert retired(100) == ["r1", "r2"]
