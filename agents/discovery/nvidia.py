"""NVIDIA discovery: NVML through nvidia-ml-py first, ``nvidia-smi --query-gpu`` CSV as fallback.

NVML is NVIDIA's supported, versioned interface (nvidia-smi's text is explicitly not stable);
the CSV query is the fallback for containers that ship the tool but not a loadable library.
XID-class faults come from an NVML event set (``nvmlEventTypeXidCriticalError``) polled with a
zero timeout at each sample; nvidia-smi cannot report them, so the fallback sees ECC only.

CSV fields (``--format=csv,noheader,nounits``), in this order: index, uuid, name, memory.total
[MiB], memory.used [MiB], utilization.gpu [%], temperature.gpu [C],
ecc.errors.uncorrected.volatile.total, pci.bus_id. Unsupported fields print ``[N/A]``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from agents.discovery.base import (
    DeviceSample,
    DiscoveredDevice,
    MiB,
    NotPresent,
    ToolFailed,
    judge_health,
    normalise_model,
    numa_node_of,
    parse_float,
    parse_int,
    run_tool,
)

QUERY_FIELDS = (
    "index,uuid,name,memory.total,memory.used,utilization.gpu,temperature.gpu,"
    "ecc.errors.uncorrected.volatile.total,pci.bus_id"
)
SMI_COMMAND = ["nvidia-smi", f"--query-gpu={QUERY_FIELDS}", "--format=csv,noheader,nounits"]


def parse_nvidia_smi_csv(text: str) -> list[tuple[DiscoveredDevice, DeviceSample]]:
    """Parse the CSV of :data:`SMI_COMMAND`. Raises ToolFailed on a line it cannot read."""
    rows: list[tuple[DiscoveredDevice, DeviceSample]] = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip():
            continue
        fields = [f.strip() for f in row]
        if len(fields) < 9:
            raise ToolFailed(f"nvidia-smi line {line_no}: expected 9 fields, got {len(fields)}")
        index = parse_int(fields[0], default=-1)
        memory_mib = parse_int(fields[3], default=-1)
        if index < 0 or memory_mib <= 0:
            raise ToolFailed(f"nvidia-smi line {line_no}: unreadable index or memory.total")
        temperature = parse_float(fields[6])
        ecc = parse_int(fields[7])
        health, reason = judge_health(temperature_c=temperature, ecc_uncorrected=ecc)
        bus_id = fields[8]
        rows.append(
            (
                DiscoveredDevice(
                    uuid=fields[1],
                    index=index,
                    model=normalise_model(fields[2]),
                    memory_bytes=memory_mib * MiB,
                    numa_node=numa_node_of(bus_id),
                    pci_bus_id=bus_id,
                ),
                DeviceSample(
                    index=index,
                    utilization_percent=parse_float(fields[5]),
                    memory_used_bytes=max(parse_int(fields[4]), 0) * MiB,
                    temperature_celsius=temperature,
                    ecc_uncorrected_errors=ecc,
                    health=health,
                    health_reason=reason,
                ),
            )
        )
    return rows


class NvidiaSmiBackend:
    name = "nvidia-smi"
    vendor = "nvidia"

    def discover(self) -> list[DiscoveredDevice]:
        rows = parse_nvidia_smi_csv(run_tool(SMI_COMMAND))
        if not rows:
            raise NotPresent("nvidia-smi lists no GPUs")
        return [device for device, _ in rows]

    def sample(self) -> list[DeviceSample]:
        return [sample for _, sample in parse_nvidia_smi_csv(run_tool(SMI_COMMAND))]


class NvmlBackend:
    """NVML via nvidia-ml-py (``import pynvml``)."""

    name = "nvml"
    vendor = "nvidia"

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] = []
        self._events: Any = None

    def _init(self) -> Any:
        if self._nvml is not None:
            return self._nvml
        try:
            import pynvml
        except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a dependency
            raise NotPresent("nvidia-ml-py is not installed") from exc
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NotPresent(f"NVML unavailable: {exc}") from exc
        self._nvml = pynvml
        return pynvml

    def discover(self) -> list[DiscoveredDevice]:
        nvml = self._init()
        devices: list[DiscoveredDevice] = []
        self._handles = []
        try:
            count = nvml.nvmlDeviceGetCount()
            for index in range(count):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                self._handles.append((index, handle))
                name = nvml.nvmlDeviceGetName(handle)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                bus_id = nvml.nvmlDeviceGetPciInfo(handle).busId
                name = name.decode() if isinstance(name, bytes) else name
                uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
                bus_id = bus_id.decode() if isinstance(bus_id, bytes) else bus_id
                devices.append(
                    DiscoveredDevice(
                        uuid=uuid,
                        index=index,
                        model=normalise_model(name),
                        memory_bytes=int(memory.total),
                        numa_node=numa_node_of(bus_id),
                        pci_bus_id=bus_id,
                    )
                )
        except nvml.NVMLError as exc:
            raise ToolFailed(f"NVML: {exc}") from exc
        if not devices:
            raise NotPresent("NVML reports no GPUs")
        self._register_xid_events()
        return devices

    def _register_xid_events(self) -> None:
        nvml = self._nvml
        try:
            self._events = nvml.nvmlEventSetCreate()
            for _, handle in self._handles:
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self._events)
        except nvml.NVMLError:
            self._events = None  # not supported (e.g. some virtualised GPUs): ECC only

    def _drain_xid(self) -> dict[int, int]:
        nvml = self._nvml
        counts: dict[int, int] = {}
        if self._events is None:
            return counts
        by_handle = {id(h): i for i, h in self._handles}
        for _ in range(64):
            try:
                data = nvml.nvmlEventSetWait_v2(self._events, 0)
            except nvml.NVMLError:  # NVML_ERROR_TIMEOUT: no pending events
                break
            index = by_handle.get(id(data.device), -1)
            counts[index] = counts.get(index, 0) + 1
        return counts

    def sample(self) -> list[DeviceSample]:
        nvml = self._init()
        if not self._handles:
            self.discover()
        xid = self._drain_xid()
        samples: list[DeviceSample] = []
        for index, handle in self._handles:
            try:
                util = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                temperature = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
            except nvml.NVMLError as exc:
                samples.append(DeviceSample(index=index, health="unhealthy", health_reason=f"NVML: {exc}"))
                continue
            try:
                ecc = nvml.nvmlDeviceGetTotalEccErrors(
                    handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC
                )
            except nvml.NVMLError:  # ECC not supported or disabled
                ecc = 0
            health, reason = judge_health(
                temperature_c=float(temperature), ecc_uncorrected=int(ecc), xid_errors=xid.get(index, 0)
            )
            samples.append(
                DeviceSample(
                    index=index,
                    utilization_percent=float(util),
                    memory_used_bytes=int(memory.used),
                    temperature_celsius=float(temperature),
                    ecc_uncorrected_errors=int(ecc),
                    xid_errors=xid.get(index, 0),
                    health=health,
                    health_reason=reason,
                )
            )
        return samples


class NvidiaBackend:
    """NVML when it loads, nvidia-smi otherwise."""

    name = "nvidia"
    vendor = "nvidia"

    def __init__(self) -> None:
        self._active: NvmlBackend | NvidiaSmiBackend | None = None
        self.why_not: list[str] = []

    def discover(self) -> list[DiscoveredDevice]:
        for candidate in (NvmlBackend(), NvidiaSmiBackend()):
            try:
                devices = candidate.discover()
            except NotPresent as exc:
                self.why_not.append(f"{candidate.name}: {exc}")
                continue
            self._active = candidate
            return devices
        raise NotPresent("; ".join(self.why_not))

    def sample(self) -> list[DeviceSample]:
        if self._active is None:
            self.discover()
        assert self._active is not None
        return self._active.sample()
