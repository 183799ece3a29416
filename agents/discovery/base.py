"""What every discovery backend returns, and the helpers they share.

Health is judged the same way for every vendor (:func:`judge_health`) so that "unhealthy" means
one thing to the scheduler whatever the chip: an uncorrectable memory error or an XID-class
fault makes a device unusable; a vendor's own warning or a hot chip makes it degraded.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
TEMP_DEGRADED_C = 85.0
TEMP_UNHEALTHY_C = 95.0
MiB = 1024**2


class NotPresent(Exception):
    """This backend's vendor tool or library is not on this machine (not an error)."""


class ToolFailed(Exception):
    """The tool is there but failed or printed something we cannot read."""


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    uuid: str
    index: int
    model: str
    memory_bytes: int
    numa_node: int = -1
    pci_bus_id: str = ""


@dataclass(frozen=True, slots=True)
class DeviceSample:
    index: int
    utilization_percent: float = 0.0
    memory_used_bytes: int = 0
    temperature_celsius: float = 0.0
    ecc_uncorrected_errors: int = 0
    xid_errors: int = 0
    health: str = HEALTHY
    health_reason: str = ""


class Backend(Protocol):
    name: str
    vendor: str  # nvidia | ascend | biren | metax

    def discover(self) -> list[DiscoveredDevice]: ...

    def sample(self) -> list[DeviceSample]: ...


def judge_health(
    *,
    temperature_c: float = 0.0,
    ecc_uncorrected: int = 0,
    xid_errors: int = 0,
    vendor_status: str = "",
) -> tuple[str, str]:
    """``(health, reason)`` from the signals every vendor exposes in some form."""
    status = vendor_status.strip().lower()
    if ecc_uncorrected > 0:
        return UNHEALTHY, f"{ecc_uncorrected} uncorrectable ECC errors"
    if xid_errors > 0:
        return UNHEALTHY, f"{xid_errors} XID-class critical errors"
    if status in ("alarm", "critical", "error", "fault", "unhealthy"):
        return UNHEALTHY, f"vendor status {vendor_status.strip()}"
    if temperature_c >= TEMP_UNHEALTHY_C:
        return UNHEALTHY, f"temperature {temperature_c:g}C >= {TEMP_UNHEALTHY_C:g}C"
    if status in ("warning", "general warning", "minor"):
        return DEGRADED, f"vendor status {vendor_status.strip()}"
    if temperature_c >= TEMP_DEGRADED_C:
        return DEGRADED, f"temperature {temperature_c:g}C >= {TEMP_DEGRADED_C:g}C"
    return HEALTHY, ""


def run_tool(argv: list[str], *, timeout_s: float = 10.0) -> str:
    """Run a vendor tool; NotPresent when it is not installed, ToolFailed when it fails."""
    if shutil.which(argv[0]) is None:
        raise NotPresent(f"{argv[0]} not found on PATH")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolFailed(f"{argv[0]} timed out after {timeout_s:g}s") from exc
    except OSError as exc:
        raise NotPresent(f"{argv[0]}: {exc.strerror}") from exc
    if done.returncode != 0:
        raise ToolFailed(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[:200]}")
    return done.stdout


def numa_node_of(pci_bus_id: str, sysfs: Path = Path("/sys/bus/pci/devices")) -> int:
    """NUMA node of a PCI device from sysfs; -1 when unknown. Accepts 8- or 4-digit domains."""
    match = re.match(
        r"^(?:[0-9a-fA-F]{4})?([0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])$", pci_bus_id.strip()
    )
    if not match:
        return -1
    try:
        return int((sysfs / match.group(1).lower() / "numa_node").read_text().strip())
    except (OSError, ValueError):
        return -1


def parse_int(text: str, *, default: int = 0) -> int:
    """Integer from a tool field; vendor placeholders ('[N/A]', 'NA', '-') give ``default``."""
    cleaned = text.strip()
    try:
        return int(float(cleaned))
    except ValueError:
        return default


def parse_float(text: str, *, default: float = 0.0) -> float:
    try:
        return float(text.strip().rstrip("%CW"))
    except ValueError:
        return default


_MODEL = re.compile(r"\b([A-Z]{1,4})[ -]?(\d{2,4}[A-Z]?\d?)\b")


def normalise_model(raw: str) -> str:
    """Short model name: 'NVIDIA H100 80GB HBM3' -> 'H100', 'MetaX C500'/'MXC500' -> 'C500',
    'Ascend 910B3' -> '910B3', 'NVIDIA GeForce RTX 4090' -> 'RTX4090'."""
    text = raw.strip()
    for prefix in ("NVIDIA ", "Tesla ", "MetaX ", "Ascend ", "Biren "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    if text.startswith("MXC") or text.startswith("MXN"):
        text = text[2:]
    match = _MODEL.search(text)
    if match:
        return match.group(1) + match.group(2)
    return text.split()[0] if text else raw
