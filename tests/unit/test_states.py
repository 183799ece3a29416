from __future__ import annotations

import itertools

import pytest

from controlplane.domain.nodes import NodeState as S
from controlplane.fleet.states import (
    TRANSITIONS,
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
