"""Simulated accelerators: a product feature for the demo, the simulator and tests.

A fleet YAML file (the default ships as ``agents/fleets/default.yaml``) describes nodes; an
agent started with ``--backend simulated --node ID`` becomes that node. Devices look exactly like
real ones to the control plane: same registration, same telemetry, same health judgement.

Telemetry is a deterministic random walk seeded by node id and device index, so two runs of the
demo show the same fleet behaviour. Faults can be scheduled per device to exercise health
handling (``faults: [{device: 3, after_s: 60, kind: ecc}]``; kinds ``ecc``, ``xid``, ``overheat``).
Lease times are relative to the agent's start (``ends_in: 36h``) so the demo fleet never
expires on disk.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from agents.discovery.base import DeviceSample, DiscoveredDevice, judge_health
from tokenfab.errors import PermanentError

GiB = 1024**3
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
VENDORS = ("nvidia", "ascend", "biren", "metax")
FAULT_KINDS = ("ecc", "xid", "overheat")


class FleetFileError(PermanentError, ValueError):
    """The fleet file is malformed; the message names the node and field."""


def parse_duration(text: str | int | float, where: str) -> float:
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise FleetFileError(f"{where}: expected a duration like 90s, 30m, 36h or 7d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class SimLease:
    provider: str
    lease_id: str
    started_ago_s: float
    ends_in_s: float
    price_per_accelerator_hour: float
    preemptible: bool


@dataclass(frozen=True)
class SimFault:
    device: int
    after_s: float
    kind: str


@dataclass(frozen=True)
class SimNode:
    node_id: str
    cluster: str
    region: str
    vendor: str
    model: str
    devices: int
    memory_gib: float
    numa_nodes: int = 1
    labels: dict[str, str] = field(default_factory=dict)
    lease: SimLease | None = None
    faults: tuple[SimFault, ...] = ()


def _node(raw: Any, position: int) -> SimNode:
    where = f"nodes[{position}]"
    if not isinstance(raw, dict):
        raise FleetFileError(f"{where}: expected a mapping")
    try:
        node_id = str(raw["id"])
        where = f"node {node_id}"
        vendor = str(raw["vendor"])
        if vendor not in VENDORS:
            raise FleetFileError(f"{where}: vendor must be one of {', '.join(VENDORS)}, got {vendor!r}")
        lease = None
        if raw.get("lease"):
            lr = raw["lease"]
            lease = SimLease(
                provider=str(lr["provider"]),
                lease_id=str(lr.get("lease_id", f"{node_id}-lease")),
                started_ago_s=parse_duration(lr.get("started_ago", "1d"), f"{where}: lease.started_ago"),
                ends_in_s=parse_duration(lr["ends_in"], f"{where}: lease.ends_in"),
                price_per_accelerator_hour=float(lr["price_per_accelerator_hour"]),
                preemptible=bool(lr.get("preemptible", False)),
            )
        faults = tuple(
            SimFault(int(f["device"]), parse_duration(f["after"], f"{where}: faults.after"), str(f["kind"]))
            for f in raw.get("faults", ())
        )
        for fault in faults:
            if fault.kind not in FAULT_KINDS:
                raise FleetFileError(f"{where}: faults.kind must be one of {', '.join(FAULT_KINDS)}")
        node = SimNode(
            node_id=node_id,
            cluster=str(raw["cluster"]),
            region=str(raw.get("region", "")),
            vendor=vendor,
            model=str(raw["model"]),
            devices=int(raw["devices"]),
            memory_gib=float(raw["memory_gib"]),
            numa_nodes=int(raw.get("numa_nodes", 1)),
            labels={str(k): str(v) for k, v in (raw.get("labels") or {}).items()},
            lease=lease,
            faults=faults,
        )
    except KeyError as exc:
        raise FleetFileError(f"{where}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, FleetFileError):
            raise
        raise FleetFileError(f"{where}: {exc}") from None
    if not 1 <= node.devices <= 64:
        raise FleetFileError(f"{where}: devices must be between 1 and 64")
    if node.numa_nodes < 1:
        raise FleetFileError(f"{where}: numa_nodes must be at least 1")
    return node


def load_fleet(path: Path | None = None) -> list[SimNode]:
    """Nodes of a fleet file; the packaged default fleet when ``path`` is None."""
    if path is None:
        text = resources.files("agents").joinpath("fleets/default.yaml").read_text()
        source = "default fleet"
    else:
        try:
            text = path.read_text()
        except OSError as exc:
            raise FleetFileError(f"{path}: {exc.strerror}") from None
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FleetFileError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise FleetFileError(f"{source}: expected a top-level 'nodes' list")
    nodes = [_node(raw, i) for i, raw in enumerate(data["nodes"])]
    seen: set[str] = set()
    for node in nodes:
        if node.node_id in seen:
            raise FleetFileError(f"{source}: node id {node.node_id!r} appears twice")
        seen.add(node.node_id)
    return nodes


class SimulatedBackend:
    name = "simulated"

    def __init__(self, node: SimNode, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.vendor = node.vendor
        self._clock = clock
        self._started = clock()
        self._rng = random.Random(f"{node.node_id}")
        self._util = [self._rng.uniform(5, 60) for _ in range(node.devices)]

    def lease_window(self, now: datetime | None = None) -> tuple[datetime, datetime] | None:
        if self.node.lease is None:
            return None
        now = now or datetime.now(UTC)
        start = now - timedelta(seconds=self.node.lease.started_ago_s)
        return start, now + timedelta(seconds=self.node.lease.ends_in_s)

    def discover(self) -> list[DiscoveredDevice]:
        n = self.node
        per_numa = max(1, n.devices // n.numa_nodes)
        return [
            DiscoveredDevice(
                uuid=f"SIM-{n.vendor.upper()}-{n.node_id}-{i}",
                index=i,
                model=n.model,
                memory_bytes=int(n.memory_gib * GiB),
                numa_node=min(i // per_numa, n.numa_nodes - 1),
                pci_bus_id=f"0000:{0x18 + i * 0x10:02x}:00.0",
            )
            for i in range(n.devices)
        ]

    def sample(self) -> list[DeviceSample]:
        elapsed = self._clock() - self._started
        samples = []
        for i in range(self.node.devices):
            self._util[i] = min(100.0, max(0.0, self._util[i] + self._rng.gauss(0, 6)))
            util = self._util[i]
            temperature = 32 + util * 0.45 + self._rng.uniform(-1, 1)
            ecc = xid = 0
            for fault in self.node.faults:
                if fault.device == i and elapsed >= fault.after_s:
                    if fault.kind == "ecc":
                        ecc = 2
                    elif fault.kind == "xid":
                        xid = 1
                    else:
                        temperature = 97.0
            health, reason = judge_health(temperature_c=temperature, ecc_uncorrected=ecc, xid_errors=xid)
            samples.append(
                DeviceSample(
                    index=i,
                    utilization_percent=round(util, 1),
                    memory_used_bytes=int(self.node.memory_gib * GiB * (0.1 + 0.8 * util / 100)),
                    temperature_celsius=round(temperature, 1),
                    ecc_uncorrected_errors=ecc,
                    xid_errors=xid,
                    health=health,
                    health_reason=reason,
                )
            )
        return samples
