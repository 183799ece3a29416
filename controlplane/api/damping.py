"""Device-health damping: a device whose reported health keeps changing is held unhealthy.

Each health change of a device is an etcd write and may move replicas, so an agent that flaps a
device's health (a broken sensor, or a compromised node trying to churn the fleet) could cost a
write and a replica move per heartbeat. The damper sits between the agent stream and the
registry: once a device has changed health ``max_changes`` times within ``window_s``, it is
reported UNHEALTHY (reason "flapping ... (damped)") until ``hold_s`` pass with no further change,
so the registry sees one stable value instead of the flapping one. Purely computational: the
caller passes ``now``.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field

from controlplane.domain.nodes import DeviceHealth, DeviceTelemetry


@dataclass
class _Device:
    last: DeviceHealth | None = None
    changes: deque[float] = field(default_factory=deque)
    held_since: float | None = None
    last_change: float = 0.0


@dataclass
class HealthDamper:
    window_s: float = 60.0
    max_changes: int = 4
    hold_s: float = 300.0
    _devices: dict[tuple[str, int], _Device] = field(default_factory=dict)

    def held(self, node_id: str) -> list[int]:
        """Devices of ``node_id`` currently held unhealthy."""
        return sorted(i for (n, i), d in self._devices.items() if n == node_id and d.held_since is not None)

    def forget(self, node_id: str) -> None:
        for key in [k for k in self._devices if k[0] == node_id]:
            del self._devices[key]

    def damp(
        self, node_id: str, samples: list[DeviceTelemetry], now: float
    ) -> tuple[list[DeviceTelemetry], int]:
        """The samples as the registry should see them, and how many devices started being held."""
        out, newly_held = [], 0
        for sample in samples:
            state = self._devices.setdefault((node_id, sample.index), _Device())
            if state.last is not None and sample.health is not state.last:
                state.changes.append(now)
                state.last_change = now
            state.last = sample.health
            while state.changes and now - state.changes[0] > self.window_s:
                state.changes.popleft()
            if state.held_since is None and len(state.changes) >= self.max_changes:
                state.held_since = now
                newly_held += 1
            if state.held_since is not None and now - state.last_change >= self.hold_s:
                state.held_since = None  # stable for the hold period: trust it again
                state.changes.clear()
            if state.held_since is not None:
                sample = dataclasses.replace(
                    sample,
                    health=DeviceHealth.UNHEALTHY,
                    health_reason=f"flapping: {self.max_changes}+ changes in {self.window_s:g} s (damped)",
                )
            out.append(sample)
        return out, newly_held
