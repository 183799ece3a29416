"""Node state machine: an explicit table of legal edges, one comment each, and the pure rules
that drive it (where silence moves a node, which devices changed health).

Purely computational, no side-effects. The registry asks :func:`check_transition` before every
change and records each one (log event, metric, persisted ``state_reason``).

The administrative flags ``cordoned`` and ``draining`` live on the record beside the state, so a
cordoned node that goes Suspect comes back Cordoned, not Ready; :func:`beating_state` computes
the state a beating node should be in from those flags.
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.domain.nodes import DeviceHealth, DeviceTelemetry, NodeRecord
from controlplane.domain.nodes import NodeState as S


class IllegalTransition(Exception):
    """A move the table does not allow; a bug in the caller, never retried."""

    retryable = False

    def __init__(self, old: S, new: S) -> None:
        super().__init__(f"illegal node transition {old.value} -> {new.value}")
        self.old = old
        self.new = new


TRANSITIONS: dict[tuple[S, S], str] = {
    # First heartbeat after (re-)registration: the agent is live and the node schedulable.
    (S.REGISTERING, S.READY): "first heartbeat",
    # First heartbeat of a node whose cordon flag survived a restart or a Lost period.
    (S.REGISTERING, S.CORDONED): "first heartbeat, node is cordoned",
    # First heartbeat of a node that was being drained before it went away.
    (S.REGISTERING, S.DRAINING): "first heartbeat, node is draining",
    # Registered but never beat within the lost timeout (agent died right after Register).
    (S.REGISTERING, S.LOST): "no heartbeat after registration",
    # Operator cordon: stop placing new work here, keep what runs.
    (S.READY, S.CORDONED): "cordoned",
    # Operator drain: cordon and move the work away.
    (S.READY, S.DRAINING): "drain requested",
    (S.CORDONED, S.DRAINING): "drain requested",
    # Operator uncordon.
    (S.CORDONED, S.READY): "uncordoned",
    (S.DRAINING, S.READY): "uncordoned during drain",
    # Drain finished: nothing left on the node; it stays unschedulable until uncordoned.
    (S.DRAINING, S.CORDONED): "drained",
    # Missed heartbeats: stop scheduling, keep replicas, wait for the lost timeout.
    (S.READY, S.SUSPECT): "missed heartbeats",
    (S.CORDONED, S.SUSPECT): "missed heartbeats",
    (S.DRAINING, S.SUSPECT): "missed heartbeats",
    # Beats resumed before the lost timeout: back to what the admin flags say.
    (S.SUSPECT, S.READY): "heartbeats resumed",
    (S.SUSPECT, S.CORDONED): "heartbeats resumed",
    (S.SUSPECT, S.DRAINING): "heartbeats resumed",
    # Silent past the lost timeout: the node's work is to be replaced (failover).
    (S.SUSPECT, S.LOST): "silent past lost timeout",
    # A Lost node must register again (fencing point: it is a new incarnation).
    (S.LOST, S.REGISTERING): "re-registered after loss",
}


def check_transition(old: S, new: S) -> str:
    """The edge's reason, or :class:`IllegalTransition`."""
    reason = TRANSITIONS.get((old, new))
    if reason is None:
        raise IllegalTransition(old, new)
    return reason


def beating_state(*, cordoned: bool, draining: bool) -> S:
    """The state of a live node given its administrative flags."""
    if draining:
        return S.DRAINING
    if cordoned:
        return S.CORDONED
    return S.READY


def is_beating(state: S) -> bool:
    """States in which the node is considered live (heartbeats on time)."""
    return state in (S.READY, S.CORDONED, S.DRAINING)


def liveness_target(
    state: S, silence_s: float | None, suspect_after_s: float, lost_after_s: float, *, drained: bool
) -> S | None:
    """Where the liveness monitor moves a node, or None: Suspect after ``suspect_after_s`` of
    silence, Lost after ``lost_after_s`` (from Suspect, or Registering without a first beat), and
    Cordoned once a Draining node has nothing left on it. ``silence_s`` None: not judged here."""
    target: S | None = S.CORDONED if drained else None
    if silence_s is not None:
        if is_beating(state) and silence_s > suspect_after_s:
            target = S.SUSPECT
        elif state in (S.SUSPECT, S.REGISTERING) and silence_s > lost_after_s:
            target = S.LOST
    return target


def health_changes(
    record: NodeRecord, telemetry: Sequence[DeviceTelemetry]
) -> dict[int, tuple[DeviceHealth, str]]:
    """Devices whose reported health differs from what the record says."""
    registered = {d.index: (d.health, d.health_reason) for d in record.registration.devices}
    changes: dict[int, tuple[DeviceHealth, str]] = {}
    for sample in telemetry:
        current = record.device_health.get(sample.index, registered.get(sample.index))
        reported = (sample.health, sample.health_reason)
        if current is None or current[0] is not reported[0]:
            changes[sample.index] = reported
    return changes
