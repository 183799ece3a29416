"""Node state machine: an explicit table of legal edges, one comment each, and the pure rules
that drive it (where silence moves a node, which devices changed health).

Purely computational, no side-effects. The registry asks :func:`check_transition` before every
change and records each one (log event, metric, persisted ``state_reason``).

The administrative flags ``cordoned`` and ``draining`` live on the record beside the state, so a
cordoned node that goes Suspect comes back Cordoned, not Ready; :func:`beating_state` computes
the state a beating node should be in from those flags.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from controlplane.domain.nodes import DeviceHealth, DeviceTelemetry, NodeRecord
from controlplane.domain.nodes import NodeState as S
from controlplane.errors import FailedPrecondition


class IllegalTransition(FailedPrecondition):
    """A move the table does not allow; a bug in the caller, never retried."""

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
    state: S,
    silence_s: float | None,
    suspect_after_s: float,
    lost_after_s: float,
    *,
    drained: bool,
    overdue: bool | None = None,
) -> S | None:
    """Where the liveness monitor moves a node, or None: Suspect after ``suspect_after_s`` of
    silence (or, when the node's beat phase is known, once ``overdue``: see :class:`BeatPhase`),
    Lost after ``lost_after_s`` (from Suspect, or Registering without a first beat), and
    Cordoned once a Draining node has nothing left on it. ``silence_s`` None: not judged here."""
    target: S | None = S.CORDONED if drained else None
    if silence_s is not None:
        late = overdue if overdue is not None else silence_s > suspect_after_s
        if is_beating(state) and late:
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


# -- when a silent node becomes Suspect: its beat phase -----------------------------------------
#
# A rule on plain silence ("Suspect after M beats' worth of silence since the last arrival")
# detects a node that died just after a beat only M intervals later, plus the monitor's check
# interval: 3 x 1 s + 0.25 s at the defaults, over the 3 s target. Agents beat on a fixed
# schedule (each beat is due one interval after the previous one was due, not after it was sent),
# and beats on one stream arrive in order and are never lost (HTTP/2 over TCP), so the leader
# knows when each next beat is *due*: the node's phase. A beat is then missed when it is later
# than the node's own recent lateness allows, and Suspect means "M - 1 beats missed and the
# next one late too": the deadline is the first missed beat's due time + (M - 2) intervals +
# a tolerance J. J is three times the worst lateness of the node's last beats, clamped to
# [TOLERANCE_MIN, TOLERANCE_MAX] of an interval (and to [0.25 s, 0.5 s] at least, for short
# intervals): a node whose beats arrive late under load (a busy two-core machine) gets the full
# 0.75 interval, a punctual one half an interval.
# Worst-case detection (death right after a beat) is (M - 1) intervals + J <= 2.75 s at the
# defaults; a false suspicion needs one beat more than I + J (1.5 to 1.75 s) late, where
# silence alone allowed 2 s plus the last beat's own lateness.

TOLERANCE_MIN = 0.5  # of an interval
TOLERANCE_MAX = 0.75
TOLERANCE_FLOOR_S = 0.25  # short intervals (tests: 0.2 s) still get the scheduling noise of a
TOLERANCE_CEILING_S = 0.5  # loaded machine: never less tolerant than silence alone was there
LATENESS_WINDOW = 32  # beats remembered per node
REANCHOR_AFTER = 8  # beats in a row all late by this much: the agent's schedule moved, follow it


@dataclass(slots=True)
class BeatPhase:
    """One node's beat schedule as seen on its current stream (purely computational).

    ``offset``: beat number ``n`` of the stream is due at ``offset + n * interval_s``, anchored on
    the earliest arrivals (the least delayed); ``lateness``: how late the recent beats were."""

    interval_s: float
    offset: float = math.nan
    beats: int = 0
    lateness: deque[float] = field(default_factory=lambda: deque(maxlen=LATENESS_WINDOW))

    def restart(self) -> None:
        """A new stream: the agent's schedule starts again."""
        self.offset, self.beats = math.nan, 0
        self.lateness.clear()

    def observe(self, at: float) -> None:
        """A beat arrived at monotonic time ``at``."""
        self.beats += 1
        base = at - self.beats * self.interval_s
        if math.isnan(self.offset) or base < self.offset:
            shift = 0.0 if math.isnan(self.offset) else self.offset - base
            self.offset = base  # an earlier arrival: the phase is earlier than thought
            self.lateness = deque((x + shift for x in self.lateness), maxlen=LATENESS_WINDOW)
        self.lateness.append(base - self.offset)
        recent = list(self.lateness)[-REANCHOR_AFTER:]
        if len(recent) == REANCHOR_AFTER and min(recent) > 0.0:
            moved = min(recent)  # every recent beat late by at least this: the schedule moved later
            self.offset += moved
            self.lateness = deque((x - moved for x in self.lateness), maxlen=LATENESS_WINDOW)

    def tolerance_s(self) -> float:
        worst = max(self.lateness, default=0.0)
        low = max(TOLERANCE_MIN * self.interval_s, TOLERANCE_FLOOR_S)
        high = max(TOLERANCE_MAX * self.interval_s, TOLERANCE_CEILING_S)
        return min(high, max(low, 3.0 * worst))

    def suspect_at(self, missed: int) -> float | None:
        """The monotonic time after which the node is Suspect (None before a first beat)."""
        if math.isnan(self.offset):
            return None
        first_missed_due = self.offset + (self.beats + 1) * self.interval_s
        return first_missed_due + max(0, missed - 2) * self.interval_s + self.tolerance_s()
