"""The fleet registry's vocabulary: heartbeat timing, commands to agents, the read model of a
node and the change feed. Plain data and one small queue wrapper; no store, no clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from controlplane.domain.nodes import DeviceTelemetry, NodeRecord, NodeState
from controlplane.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class FleetTiming:
    """Heartbeat timing. Defaults: beat every 1 s, Suspect after 3 missed beats, Lost after 10 s.

    "3 missed beats" is judged on each node's beat phase once it beats on a stream here
    (:class:`controlplane.fleet.states.BeatPhase`: two beats missed and the third later than the
    node's own lateness allows, at most 2.75 s after the last beat); on plain silence
    (``suspect_after_s``) for nodes whose stream is elsewhere or has not beaten yet."""

    heartbeat_interval_s: float = 1.0
    suspect_after_missed: int = 3
    lost_after_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0.01 <= self.heartbeat_interval_s <= 3600:
            raise InvalidArgument("heartbeat_interval_s", "must be between 0.01 and 3600 seconds")
        if self.suspect_after_missed < 1:
            raise InvalidArgument("suspect_after_missed", "must be at least 1")
        if self.lost_after_s <= self.suspect_after_s:
            raise InvalidArgument(
                "lost_after_s",
                f"must be longer than the suspect timeout ({self.suspect_after_s:g} s = "
                f"{self.suspect_after_missed} missed beats of {self.heartbeat_interval_s:g} s)",
            )

    @property
    def suspect_after_s(self) -> float:
        return self.heartbeat_interval_s * self.suspect_after_missed

    @property
    def check_interval_s(self) -> float:
        return min(self.heartbeat_interval_s / 4, 0.5)


class CommandKind(StrEnum):
    CORDON = "cordon"
    UNCORDON = "uncordon"
    DRAIN = "drain"
    CONFIG = "config"


@dataclass(frozen=True, slots=True)
class NodeCommand:
    kind: CommandKind
    reason: str = ""
    heartbeat_interval_s: float = 0.0


class CommandSink(Protocol):
    """Where commands for one node go: the node's open Connect stream."""

    def push(self, command: NodeCommand) -> None: ...


@dataclass(frozen=True, slots=True)
class NodeView:
    """Read model of one node: the persisted record plus in-memory liveness."""

    record: NodeRecord
    last_heartbeat: datetime | None
    telemetry: tuple[DeviceTelemetry, ...]

    @property
    def node_id(self) -> str:
        return self.record.node_id

    @property
    def state(self) -> NodeState:
        return self.record.state


class ChangeKind(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"


class Subscription:
    """A registered change feed; iterate it, and ``close()`` it when done."""

    def __init__(self, subscribers: set[asyncio.Queue[tuple[ChangeKind, NodeView]]]) -> None:
        self._subscribers = subscribers
        self._queue: asyncio.Queue[tuple[ChangeKind, NodeView]] = asyncio.Queue(maxsize=10_000)
        subscribers.add(self._queue)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[ChangeKind, NodeView]:
        if self._queue not in self._subscribers:
            raise StopAsyncIteration  # dropped (too slow) or closed
        return await self._queue.get()

    def close(self) -> None:
        self._subscribers.discard(self._queue)
