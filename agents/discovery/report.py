"""What a node's agent would register, as plain data (``tokenfab agent discover``).

The report takes the devices exactly as the agent registers them and one sample, as the first
heartbeat would carry it, and gives each device the worse of the two verdicts: discovery may
already know that a device is unreadable (no memory total), and a sample adds what only live
counters show (ECC, XID, temperature). A sample that fails marks every device unhealthy with the
reason, because the agent's heartbeats would fail the same way.
"""

from __future__ import annotations

from typing import Any

from agents.discovery.base import (
    UNHEALTHY,
    Backend,
    DeviceSample,
    DiscoveredDevice,
    MiB,
    NotPresent,
    ToolFailed,
    worst,
)


def node_report(backend: Backend, devices: list[DiscoveredDevice]) -> dict[str, Any]:
    """``{"backend", "accelerator", "devices": [{"index", "uuid", "model", "memory_mib",
    "health", "reason"}]}`` for the given discovery result."""
    samples: dict[int, DeviceSample] = {}
    sample_error = ""
    try:
        samples = {s.index: s for s in backend.sample()}
    except (NotPresent, ToolFailed, OSError) as exc:
        sample_error = f"sampling failed: {exc}"
    rows: list[dict[str, Any]] = []
    for device in sorted(devices, key=lambda d: d.index):
        verdicts = [(device.health, device.health_reason)]
        sample = samples.get(device.index)
        if sample_error:
            verdicts.append((UNHEALTHY, sample_error))
        elif sample is not None:
            verdicts.append((sample.health, sample.health_reason))
        health, reason = worst(*verdicts)
        rows.append(
            {
                "index": device.index,
                "uuid": device.uuid,
                "model": device.model,
                "memory_mib": device.memory_bytes // MiB,
                "health": health,
                "reason": reason,
            }
        )
    return {
        "backend": backend.vendor if backend.name != "simulated" else "simulated",
        "accelerator": "+".join(dict.fromkeys(d.model for d in devices)),
        "devices": rows,
    }
