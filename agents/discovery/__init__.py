"""Device discovery backends, one per vendor plus a simulated one.

Every backend answers the same two questions: :meth:`Backend.discover` (which devices, static
facts) and :meth:`Backend.sample` (live utilisation, temperature, errors, health). A backend
whose tool or library is missing raises :class:`NotPresent` from ``discover`` and never crashes
the agent; ``backend_for`` picks one by name, and ``auto`` tries them in order.
"""

from agents.discovery.base import (
    Backend,
    DeviceSample,
    DiscoveredDevice,
    NotPresent,
    ToolFailed,
    judge_health,
)
from agents.discovery.registry import BACKEND_NAMES, backend_for, detect

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "DeviceSample",
    "DiscoveredDevice",
    "NotPresent",
    "ToolFailed",
    "backend_for",
    "detect",
    "judge_health",
]
