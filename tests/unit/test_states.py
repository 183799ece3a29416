from __future__ import annotations

import itertools
import random

import pytest

from controlplane.domain.nodes import NodeState as S
from controlplane.fleet.states import (
    TRANSITIONS,
    BeatPhase,
    IllegalTransition,
    beating_state,
    check_transition,
    is_beating,
)


def test_every_edge_has_a_reason() -> None:
    assert TRANSITIONS
    for edge, reason in TRANSITIONS.items():
        assert reason.strip(), edge


def test_illegal_moves_raise_typed_error() -> None:
    illegal = [(a, b) for a, b in itertools.product(S, S) if (a, b) not in TRANSITIONS]
    assert (S.LOST, S.READY) in illegal  # a lost node must re-register (fencing point)
    assert (S.READY, S.LOST) in illegal  # Lost only after Suspect
    for old, new in illegal:
        with pytest.raises(IllegalTransition) as info:
            check_transition(old, new)
        assert info.value.old is old
        assert info.value.new is new


def test_lifecycle_path_is_legal() -> None:
    path = [
        S.REGISTERING,
        S.READY,
        S.SUSPECT,
        S.LOST,
        S.REGISTERING,
        S.READY,
        S.CORDONED,
        S.DRAINING,
        S.CORDONED,
    ]
    for old, new in itertools.pairwise(path):
        assert check_transition(old, new)


def test_beating_state_follows_admin_flags() -> None:
    assert beating_state(cordoned=False, draining=False) is S.READY
    assert beating_state(cordoned=True, draining=False) is S.CORDONED
    assert beating_state(cordoned=True, draining=True) is S.DRAINING
    assert [s for s in S if is_beating(s)] == [S.READY, S.CORDONED, S.DRAINING]


def test_every_state_is_reachable_and_leavable() -> None:
    sources = {a for a, _ in TRANSITIONS}
    targets = {b for _, b in TRANSITIONS}
    assert set(S) == sources == targets


# -- the beat-phase rule (fake time: plain numbers) ---------------------------------------------


def _phase_after(arrivals: list[float], interval: float = 1.0) -> BeatPhase:
    phase = BeatPhase(interval)
    for at in arrivals:
        phase.observe(at)
    return phase


def test_a_punctual_node_dying_at_any_phase_is_suspect_within_three_seconds() -> None:
    arrivals = [100.0 + n + 0.01 * (n % 3) for n in range(20)]  # 0-20 ms of jitter
    phase = _phase_after(arrivals)
    deadline = phase.suspect_at(3)
    assert deadline is not None
    worst = max(deadline - (arrivals[-1] + u / 100) for u in range(100))  # death anywhere in the gap
    assert worst < 3.0
    assert deadline - arrivals[-1] >= 2.0  # two whole beats missed first


def test_the_tolerance_follows_the_nodes_own_lateness_within_bounds() -> None:
    punctual = _phase_after([10.0 + n for n in range(10)])
    assert punctual.tolerance_s() == 0.5
    jittery = _phase_after([10.0 + n + (0.3 if n % 4 == 0 else 0.0) for n in range(10)])
    assert jittery.tolerance_s() == 0.75  # 3 x 0.3 s, clamped to three quarters of a beat
    assert BeatPhase(1.0).suspect_at(3) is None  # no beat yet: no phase, the silence rule judges


def test_a_loaded_machines_late_beats_never_make_the_node_suspect() -> None:
    """Beats delayed like a busy two-core machine delays them (most within 50 ms, some by up to
    0.9 s, one by 1.4 s): no beat ever arrives after the deadline computed before it."""
    rng = random.Random(7)
    phase, suspicions, old_rule = BeatPhase(1.0), 0, 0
    previous = None
    for n in range(1, 3000):
        roll = rng.random()
        late = (
            rng.uniform(0, 0.05)
            if roll < 0.95
            else rng.uniform(0.1, 0.4)
            if roll < 0.995
            else rng.uniform(0.5, 0.9)
        )
        if n == 1500:
            late = 1.4
        at = 1000.0 + n + late
        deadline = phase.suspect_at(3)
        if deadline is not None and at > deadline:
            suspicions += 1
        if previous is not None and at - previous > 3.0:
            old_rule += 1
        phase.observe(at)
        previous = at
    assert suspicions == 0 and old_rule == 0


def test_a_schedule_that_moved_later_is_followed() -> None:
    """The agent's schedule slips by 0.4 s once (a slow sample): beats look late for a while (the
    tolerance widens), then the phase is re-anchored and the tolerance shrinks back."""
    phase = BeatPhase(1.0)
    for n in range(40):
        at = 10.0 + n + (0.4 if n >= 10 else 0.0)
        deadline = phase.suspect_at(3)
        assert deadline is None or at < deadline
        phase.observe(at)
        if n == 13:
            assert phase.tolerance_s() == 0.75  # 3 x 0.4 s, clamped
    assert phase.tolerance_s() == 0.5  # eight late beats in a row: the new schedule is the phase
    deadline = phase.suspect_at(3)
    assert deadline is not None and abs(deadline - (10.4 + 39 + 2.5)) < 1e-6


def test_a_new_stream_restarts_the_phase() -> None:
    phase = _phase_after([10.0 + n for n in range(5)])
    phase.restart()
    assert phase.suspect_at(3) is None
    phase.observe(100.3)
    deadline = phase.suspect_at(3)
    assert deadline is not None and abs(deadline - (100.3 + 2.5)) < 1e-6
