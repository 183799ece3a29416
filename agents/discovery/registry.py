"""Backend lookup by name, and ``auto`` detection across the real vendors."""

from __future__ import annotations

from collections.abc import Callable

from agents.discovery.ascend import AscendBackend
from agents.discovery.base import Backend, DiscoveredDevice, NotPresent, ToolFailed
from agents.discovery.biren import BirenBackend
from agents.discovery.metax import MetaxBackend
from agents.discovery.nvidia import NvidiaBackend

BACKEND_NAMES = ("auto", "nvidia", "ascend", "metax", "biren", "simulated")
REAL_BACKENDS = ("nvidia", "ascend", "metax", "biren")


def backend_for(name: str) -> Backend:
    """A real vendor backend by name (``simulated`` is built from a fleet file by the agent)."""
    factories: dict[str, Callable[[], Backend]] = {
        "nvidia": NvidiaBackend,
        "ascend": AscendBackend,
        "metax": MetaxBackend,
        "biren": BirenBackend,
    }
    if name not in factories:
        raise ValueError(f"backend: expected one of {', '.join(factories)}, got {name!r}")
    return factories[name]()


def detect() -> tuple[Backend, list[DiscoveredDevice]]:
    """The first real backend that finds devices. When none does: ToolFailed if some vendor's
    tool is installed but failed or printed nothing readable (loud: that is a broken node, not an
    empty one), else NotPresent; either way the message lists why each backend did not."""
    reasons = []
    failed = False
    for name in REAL_BACKENDS:
        backend = backend_for(name)
        try:
            return backend, backend.discover()
        except NotPresent as exc:
            reasons.append(f"{name}: {exc}")
        except ToolFailed as exc:
            reasons.append(f"{name}: {exc}")
            failed = True
    if failed:
        raise ToolFailed("a vendor tool is present but no device could be read: " + "; ".join(reasons))
    raise NotPresent("no accelerator found: " + "; ".join(reasons))
