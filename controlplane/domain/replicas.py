"""Replicas: one model server on a TP group of one node, and its lifecycle.

Stored as :class:`ReplicaRecord` pydantic JSON under ``/tokenfab/v1/replicas/<id>``, written by
the reconciler only (compare-and-swap), before it acts. Observed engine metrics are not stored
(they change every second); the reconciler keeps the latest in memory.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from controlplane.domain.nodes import Vendor
from controlplane.errors import FailedPrecondition


class ReplicaState(StrEnum):
    PENDING = "Pending"  # decided and persisted; the executor has not been asked yet
    STARTING = "Starting"  # the executor created the actor; the engine is loading
    READY = "Ready"  # the engine answers its health check and serves
    DRAINING = "Draining"  # no longer wanted: finishing in-flight work, then stopped
    STOPPED = "Stopped"  # gone on purpose (terminal)
    FAILED = "Failed"  # gone by accident or never came up (terminal)


class IllegalReplicaTransition(FailedPrecondition):
    """A move the replica table does not allow; a bug in the caller, never retried."""

    def __init__(self, replica_id: str, old: ReplicaState, new: ReplicaState) -> None:
        super().__init__(f"replica {replica_id}: {old.value} -> {new.value} is not a legal transition")


S = ReplicaState
TRANSITIONS: dict[tuple[ReplicaState, ReplicaState], str] = {
    (S.PENDING, S.STARTING): "the executor accepted the start; the actor is being created",
    (S.PENDING, S.STOPPED): "no longer wanted before anything ran (request cancelled, node gone)",
    (S.PENDING, S.FAILED): "the executor refused or could not be reached until the start deadline",
    (S.STARTING, S.READY): "the engine passed its health check",
    (S.STARTING, S.FAILED): "the engine failed to start, the actor died, or the start deadline passed",
    (S.STARTING, S.DRAINING): "no longer wanted while loading: stop it",
    (S.READY, S.DRAINING): "no longer wanted (cancelled, scaled down, node drained): drain, then stop",
    (S.READY, S.FAILED): "the actor or its node died, or the engine stopped answering",
    (S.DRAINING, S.STOPPED): "the executor stopped the actor and released its devices",
    (S.DRAINING, S.FAILED): "the actor died while draining; nothing left to stop",
}
TERMINAL = frozenset({S.STOPPED, S.FAILED})
LIVE = frozenset({S.PENDING, S.STARTING, S.READY})  # counted towards a request's capacity


def check_transition(replica_id: str, old: ReplicaState, new: ReplicaState) -> None:
    if (old, new) not in TRANSITIONS:
        raise IllegalReplicaTransition(replica_id, old, new)


class ReplicaRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    request_id: str
    tenant: str
    model: str
    vendor: Vendor
    accelerator: str
    cluster: str
    node_id: str
    devices: tuple[int, ...]
    tensor_parallel: int
    engine: str
    dtype: str
    generation: int = 1  # bumped if the replica is ever re-placed (fencing, failover issue)
    state: ReplicaState = ReplicaState.PENDING
    reason: str = ""
    predicted_output_tokens_per_second: float
    predicted_input_tokens_per_second: float = 0.0
    calibration_factor: float = 1.0  # the (model, accelerator) factor the prediction included
    actor_id: str = ""
    endpoint: str = ""
    created_at: datetime
    updated_at: datetime

    def moved(self, new: ReplicaState, reason: str, now: datetime, **changes: object) -> ReplicaRecord:
        check_transition(self.id, self.state, new)
        return self.model_copy(update={"state": new, "reason": reason, "updated_at": now, **changes})
