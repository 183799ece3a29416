"""NVIDIA discovery: NVML through nvidia-ml-py first, ``nvidia-smi --query-gpu`` CSV as fallback.

NVML is NVIDIA's supported, versioned interface (nvidia-smi's text is explicitly not stable).
The CSV query is the fallback for containers that ship the tool but not a loadable library, and
for GPUs where NVML answers NotSupported to a query discovery needs (the GB10 of the DGX Spark has
unified memory: ``nvmlDeviceGetMemoryInfo`` is NotSupported and nvidia-smi prints ``[N/A]``).
XID-class faults come from an NVML event set (``nvmlEventTypeXidCriticalError``) polled with a
zero timeout at each sample; nvidia-smi cannot report them, so the fallback sees ECC only.

The CSV is read by its header (``--format=csv,nounits`` keeps the header line), so extra or
reordered fields and the unit suffixes of a plain ``--format=csv`` are fine. A GPU whose row
cannot be read in full (``[N/A]`` in memory.total) is reported unhealthy with the reason; the
other GPUs of the node are unaffected. Only output with no readable GPU row is an error. NVML
discovery isolates GPUs the same way: one that NVML cannot read (GPU_IS_LOST) is reported
unhealthy with NVML's error, and only NotSupported sends the whole node to nvidia-smi.
"""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from typing import Any

from agents.discovery.base import (
    BUS_ID,
    UNHEALTHY,
    DeviceSample,
    DiscoveredDevice,
    MiB,
    NotPresent,
    ToolFailed,
    distinct,
    judge_health,
    normalise_model,
    numa_node_of,
    parse_float,
    parse_int,
    run_tool,
    worst,
)
from tokenfab.logs import get_logger

log = get_logger("discovery.nvidia")

QUERY_FIELDS = (
    "index,uuid,name,memory.total,memory.used,utilization.gpu,temperature.gpu,"
    "ecc.errors.uncorrected.volatile.total,pci.bus_id"
)
SMI_COMMAND = ["nvidia-smi", f"--query-gpu={QUERY_FIELDS}", "--format=csv,nounits"]
_UNIT = re.compile(r"\s*\[[^\]]*\]\s*$")
_NOT_REPORTED = ("[n/a]", "n/a", "[not supported]", "not supported", "")


def _header_name(text: str) -> str:
    """``'memory.total [MiB]'`` -> ``'memory.total'``."""
    return _UNIT.sub("", text.strip())


def _reported(value: str) -> bool:
    return value.strip().lower() not in _NOT_REPORTED


def parse_nvidia_smi_csv(text: str) -> list[tuple[DiscoveredDevice, DeviceSample]]:
    """Parse ``nvidia-smi --query-gpu=... --format=csv[,nounits]`` output (header line required).

    Raises ToolFailed when there is no header with an ``index`` column or no GPU row can be read.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ToolFailed("nvidia-smi printed nothing")
    # The header is the first line with an 'index' field, not necessarily the first line: a
    # warning printed before it (an infoROM or persistence-mode notice) must not fail the node.
    at, header = next(
        (
            (i, names)
            for i, line in enumerate(lines)
            if "index"
            in (names := [_header_name(h) for h in next(csv.reader([line], skipinitialspace=True))])
        ),
        (-1, []),
    )
    if at < 0:
        raise ToolFailed(f"nvidia-smi: no CSV header with an 'index' column (got {lines[0][:80]!r})")
    out: list[tuple[DiscoveredDevice, DeviceSample]] = []
    problems: list[str] = [f"line {n}: not CSV, skipped: {lines[n - 1][:80]!r}" for n in range(1, at + 1)]
    for line_no, row in enumerate(csv.reader(lines[at + 1 :], skipinitialspace=True), start=at + 2):
        fields = dict(zip(header, (v.strip() for v in row), strict=False))
        index = parse_int(fields.get("index", ""), default=-1)
        if index < 0:
            problems.append(f"line {line_no}: no GPU index in {','.join(row)[:80]!r}")
            continue
        verdicts: list[tuple[str, str]] = []
        if len(row) != len(header):
            verdicts.append((UNHEALTHY, f"nvidia-smi row has {len(row)} fields, header {len(header)}"))
        total = fields.get("memory.total", "")
        memory_mib = parse_int(total, default=0) if _reported(total) else 0
        if memory_mib <= 0:
            verdicts.append((UNHEALTHY, f"memory.total not reported ({total or 'missing'})"))
        temperature = parse_float(fields.get("temperature.gpu", ""))
        ecc = parse_int(fields.get("ecc.errors.uncorrected.volatile.total", ""))
        verdicts.append(judge_health(temperature_c=temperature, ecc_uncorrected=ecc))
        health, reason = worst(*verdicts)
        bus_id = fields.get("pci.bus_id", "")
        uuid = fields.get("uuid", "")
        if not _reported(uuid):
            uuid = f"nvidia-{bus_id.lower()}" if BUS_ID.match(bus_id) else f"nvidia-gpu{index}"
        out.append(
            (
                DiscoveredDevice(
                    uuid=uuid,
                    index=index,
                    model=normalise_model(fields.get("name", "") or "NVIDIA"),
                    memory_bytes=max(memory_mib, 0) * MiB,
                    numa_node=numa_node_of(bus_id),
                    pci_bus_id=bus_id if BUS_ID.match(bus_id) else "",
                    health=health,
                    health_reason=reason,
                ),
                DeviceSample(
                    index=index,
                    utilization_percent=parse_float(fields.get("utilization.gpu", "")),
                    memory_used_bytes=max(parse_int(fields.get("memory.used", "")), 0) * MiB,
                    temperature_celsius=temperature,
                    ecc_uncorrected_errors=ecc,
                    health=health,
                    health_reason=reason,
                ),
            )
        )
    if not out:
        raise ToolFailed("nvidia-smi: no GPU row could be read (" + ("; ".join(problems) or "no rows") + ")")
    for problem in problems:
        log.warning("nvidia_smi.row_skipped", problem=problem)
    return distinct(out, tool="nvidia-smi")


class NvidiaSmiBackend:
    name = "nvidia-smi"
    vendor = "nvidia"

    def discover(self) -> list[DiscoveredDevice]:
        return [device for device, _ in parse_nvidia_smi_csv(run_tool(SMI_COMMAND))]

    def sample(self) -> list[DeviceSample]:
        return [sample for _, sample in parse_nvidia_smi_csv(run_tool(SMI_COMMAND))]


class NvmlUnsupported(ToolFailed):
    """NVML is loaded but answers NotSupported to a query discovery needs (e.g. memory on GB10)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlBackend:
    """NVML via nvidia-ml-py (``import pynvml``)."""

    name = "nvml"
    vendor = "nvidia"

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] = []
        self._no_handle: dict[int, str] = {}  # GPUs NVML gave no handle for: index -> error
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

    def _not_supported(self, exc: Exception) -> bool:
        code = getattr(self._nvml, "NVML_ERROR_NOT_SUPPORTED", 3)
        return getattr(exc, "value", None) == code

    def discover(self) -> list[DiscoveredDevice]:
        """Every GPU NVML counts. A GPU that NVML cannot read (GPU_IS_LOST after an XID 79, for
        example) is reported unhealthy with NVML's error, under its uuid when NVML still gave it
        and ``nvidia-gpu<index>`` otherwise; the other GPUs are unaffected. NotSupported on any
        GPU still raises NvmlUnsupported, so that the node falls back to nvidia-smi."""
        nvml = self._init()
        devices: list[DiscoveredDevice] = []
        self._handles = []
        self._no_handle = {}
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            raise ToolFailed(f"NVML: {exc}") from exc
        for index in range(count):
            uuid = ""
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                self._handles.append((index, handle))
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                name = _text(nvml.nvmlDeviceGetName(handle))
                bus_id = _text(nvml.nvmlDeviceGetPciInfo(handle).busId)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except nvml.NVMLError as exc:
                if self._not_supported(exc):
                    raise NvmlUnsupported(f"NVML: {exc} (GPU {index})") from exc
                log.warning("nvml.gpu_unreadable", index=index, error=str(exc))
                if not any(i == index for i, _ in self._handles):
                    self._no_handle[index] = f"NVML: {exc}"
                devices.append(
                    DiscoveredDevice(
                        uuid=uuid or f"nvidia-gpu{index}",
                        index=index,
                        model="",  # filled below from the readable GPUs when they agree
                        memory_bytes=0,
                        health=UNHEALTHY,
                        health_reason=f"NVML: {exc}",
                    )
                )
                continue
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
        if not devices:
            raise NotPresent("NVML reports no GPUs")
        if all(d.health == UNHEALTHY and not d.model for d in devices):
            raise ToolFailed("NVML: no GPU could be read (" + devices[0].health_reason + ")")
        known = {d.model for d in devices if d.model}
        fill = known.pop() if len(known) == 1 else "NVIDIA"
        devices = [d if d.model else replace(d, model=fill) for d in devices]
        self._register_xid_events()
        return devices

    def _register_xid_events(self) -> None:
        nvml = self._nvml
        try:
            self._events = nvml.nvmlEventSetCreate()
        except nvml.NVMLError:
            self._events = None  # not supported (e.g. some virtualised GPUs): ECC only
            return
        for index, handle in self._handles:
            try:  # per GPU: one lost GPU must not turn off XID events for the others
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self._events)
            except nvml.NVMLError as exc:
                log.warning("nvml.xid_events_unavailable", index=index, error=str(exc))

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
        samples = [
            DeviceSample(index=index, health=UNHEALTHY, health_reason=reason)
            for index, reason in self._no_handle.items()
        ]
        for index, handle in self._handles:
            try:
                util = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                temperature = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
            except nvml.NVMLError as exc:
                samples.append(DeviceSample(index=index, health=UNHEALTHY, health_reason=f"NVML: {exc}"))
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
        return sorted(samples, key=lambda s: s.index)


class NvidiaBackend:
    """NVML when it loads and answers; nvidia-smi when NVML is missing or answers NotSupported.

    If NVML fails for another reason and nvidia-smi is not installed, the NVML error is raised
    (ToolFailed): a driver that is there but broken is not "no GPU".
    """

    name = "nvidia"
    vendor = "nvidia"

    def __init__(self) -> None:
        self._active: NvmlBackend | NvidiaSmiBackend | None = None
        self.why_not: list[str] = []

    def discover(self) -> list[DiscoveredDevice]:
        failure: ToolFailed | None = None
        for candidate in (NvmlBackend(), NvidiaSmiBackend()):
            try:
                devices = candidate.discover()
            except NotPresent as exc:
                self.why_not.append(f"{candidate.name}: {exc}")
                continue
            except ToolFailed as exc:
                self.why_not.append(f"{candidate.name}: {exc}")
                log.warning("nvidia.backend_failed", backend=candidate.name, error=str(exc))
                failure = failure or exc
                continue
            self._active = candidate
            return devices
        if failure is not None:
            raise ToolFailed("; ".join(self.why_not)) from failure
        raise NotPresent("; ".join(self.why_not))

    def sample(self) -> list[DeviceSample]:
        if self._active is None:
            self.discover()
        assert self._active is not None
        return self._active.sample()
