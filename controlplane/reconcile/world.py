"""What one reconcile decision reads and returns: the observed :class:`World` (with what each
executor reported, :class:`Seen`), the rules' settings (:class:`ReconcileConfig`), and the
:class:`Decision` with its failover :class:`Event` records. Data only, purely computational.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from controlplane.domain.capacity import CapacityRecord, CapacityStatus
from controlplane.domain.replicas import ReplicaRecord, ReplicaState
from controlplane.scheduler import NodeSlot, SchedulerConfig

S = ReplicaState


@dataclass(frozen=True, slots=True)
class Seen:
    """What the executor reported for one actor this pass."""

    state: str  # starting | ready | failed | stopping
    actor_id: str = ""
    endpoint: str = ""
    message: str = ""
    output_tokens_per_second: float = 0.0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    tpot_p95_s: float = 0.0  # 0: no finished request in the window
    running: int = 0


@dataclass(frozen=True, slots=True)
class ReconcileConfig:
    start_timeout_s: float = 900.0  # a large model's weights take minutes to load
    actor_grace_s: float = 15.0  # a Starting replica without an actor after this long failed
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    failure_window_s: float = 600.0
    crash_within_s: float = 120.0  # a failure this soon after creation counts towards the backoff
    history_s: float = 3600.0  # Stopped and Failed records are deleted this long after they ended
    # make-before-break: replace a replica this long (its expected start time plus a margin)
    # before its node's lease ends; start times are learned per (model, accelerator)
    default_start_s: float = 60.0
    replacement_margin_s: float = 30.0
    start_times: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # a node that comes back from Lost this often within the window is quarantined for a while
    quarantine_after: int = 3
    quarantine_window_s: float = 600.0
    quarantine_s: float = 900.0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


@dataclass(frozen=True, slots=True)
class World:
    """Everything observed in one pass."""

    now: datetime
    requests: Sequence[CapacityRecord]
    replicas: Sequence[ReplicaRecord]
    fleet: Sequence[NodeSlot]
    seen: Mapping[str, Mapping[str, Seen]]  # cluster -> replica id -> observation (answered only)
    ray_nodes: Mapping[str, frozenset[str]]  # cluster -> fleet node ids with a live Ray node
    # request id -> output tokens/s the autoscaler applied; absent: the reserved target
    targets: Mapping[str, float] = field(default_factory=dict)

    def target(self, request: CapacityRecord) -> float:
        return self.targets.get(request.id, request.spec.output_tokens_per_second)


@dataclass(frozen=True, slots=True)
class Event:
    """One failover step: what happened, to which replica, request and node, and why."""

    kind: str  # replica_lost | replica_failed | replacement_started | replica_retired
    message: str
    request_id: str = ""
    replica_id: str = ""
    node_id: str = ""


@dataclass
class Decision:
    updates: list[ReplicaRecord] = field(default_factory=list)  # transitions of existing records
    creates: list[ReplicaRecord] = field(default_factory=list)  # new Pending replicas
    stops: list[ReplicaRecord] = field(default_factory=list)  # ask the executor to stop these
    orphans: list[tuple[str, str]] = field(default_factory=list)  # (cluster, actor name) to stop
    expired: list[ReplicaRecord] = field(default_factory=list)  # terminal records past the history
    statuses: dict[str, CapacityStatus] = field(default_factory=dict)  # request id -> new status
    notes: list[str] = field(default_factory=list)  # one line per decision, for the log
    events: list[Event] = field(default_factory=list)  # failover steps, for `tokenfab events`

    @property
    def empty(self) -> bool:
        return not (
            self.updates or self.creates or self.stops or self.orphans or self.statuses or self.expired
        )
