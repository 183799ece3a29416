"""Huawei Ascend discovery from ``npu-smi info`` (summary table) and ``npu-smi info -m`` (chip map).

Table layout (Huawei's npu-smi reference, EDOC1100388860; the same layout appears in public
captures such as GPUStack's npu-smi test fixtures). Each NPU takes two rows::

    | NPU   Name      | Health  | Power(W)  Temp(C)   Hugepages-Usage(page) |
    | Chip            | Bus-Id  | AICore(%) Memory-Usage(MB) HBM-Usage(MB)  |
    | 0     910B3     | OK      | 95.7      36        0    / 0              |
    | 0               | 0000:C1:00.0 | 0    0    / 0     3389 / 65536       |

Device memory is the HBM total when present (910A/910B/910C), else the DDR Memory-Usage total
(310P). The visible-devices index (ASCEND_RT_VISIBLE_DEVICES) is the chip's logical id from
``npu-smi info -m``; without the map we number chips in table order. npu-smi prints no UUID in
the summary, so the device uuid is the PCI bus id, which is stable for a slot. Health maps
npu-smi's OK / Warning / Alarm / Critical through :func:`judge_health`.

DCMI (libdcmi.so) would avoid the text parsing but needs the driver's headers and ignores
ASCEND_RT_VISIBLE_DEVICES; npu-smi is present wherever the driver is.
"""

from __future__ import annotations

import re

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
    run_tool,
)

_ROW = re.compile(r"^\|(.*)\|(.*)\|(.*)\|\s*$")
_PAIR = re.compile(r"(\d+)\s*/\s*(\d+)")


def parse_chip_map(text: str) -> dict[tuple[int, int], tuple[int, str]]:
    """``npu-smi info -m``: (npu id, chip id) -> (logical id, chip name). Non-NPU chips skipped."""
    mapping: dict[tuple[int, int], tuple[int, str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or not (parts[0].isdigit() and parts[1].isdigit() and parts[2].isdigit()):
            continue  # header, blank, or a chip with logical id "-" (e.g. the MCU)
        mapping[(int(parts[0]), int(parts[1]))] = (int(parts[2]), " ".join(parts[3:]))
    return mapping


def parse_npu_smi_info(
    text: str, chip_map: dict[tuple[int, int], tuple[int, str]] | None = None
) -> list[tuple[DiscoveredDevice, DeviceSample]]:
    rows = [m.groups() for m in (_ROW.match(line) for line in text.splitlines()) if m]
    devices: list[tuple[DiscoveredDevice, DeviceSample]] = []
    i = 0
    position = 0
    while i < len(rows):
        first = [c.strip() for c in rows[i]]
        head = first[0].split()
        # A first row starts with the NPU id and a name; the process table's rows do not carry a
        # health word in column two, which is how the two tables are told apart.
        if (
            len(head) >= 2
            and head[0].isdigit()
            and first[1]
            and not first[1][0].isdigit()
            and i + 1 < len(rows)
        ):
            second = [c.strip() for c in rows[i + 1]]
            chip_fields = second[0].split()
            if not chip_fields or not chip_fields[0].isdigit():
                i += 1
                continue
            npu_id, chip_id = int(head[0]), int(chip_fields[0])
            name = " ".join(head[1:])
            status = first[1]
            power_temp = first[2].split()
            temperature = parse_float(power_temp[1]) if len(power_temp) > 1 else 0.0
            bus_id = second[1]
            usage = second[2].split(None, 1)
            aicore = parse_float(usage[0]) if usage else 0.0
            pairs = _PAIR.findall(second[2])
            if not pairs:
                raise ToolFailed(f"npu-smi NPU {npu_id}: no memory figures in {second[2].strip()!r}")
            used_mb, total_mb = (int(x) for x in pairs[-1])  # HBM when the chip has it
            if total_mb == 0 and len(pairs) > 1:
                used_mb, total_mb = (int(x) for x in pairs[0])
            logical, chip_name = (chip_map or {}).get((npu_id, chip_id), (position, name))
            model = normalise_model(chip_name if chip_name and chip_name != "xxx" else name)
            health, reason = judge_health(temperature_c=temperature, vendor_status=status)
            devices.append(
                (
                    DiscoveredDevice(
                        uuid=f"ascend-{bus_id.lower()}",
                        index=logical,
                        model=model,
                        memory_bytes=total_mb * MiB,
                        numa_node=numa_node_of(bus_id),
                        pci_bus_id=bus_id,
                    ),
                    DeviceSample(
                        index=logical,
                        utilization_percent=aicore,
                        memory_used_bytes=used_mb * MiB,
                        temperature_celsius=temperature,
                        health=health,
                        health_reason=reason,
                    ),
                )
            )
            position += 1
            i += 2
            continue
        i += 1
    return devices


class AscendBackend:
    name = "ascend"
    vendor = "ascend"

    def _read(self) -> list[tuple[DiscoveredDevice, DeviceSample]]:
        summary = run_tool(["npu-smi", "info"])
        try:
            chip_map = parse_chip_map(run_tool(["npu-smi", "info", "-m"]))
        except ToolFailed:
            chip_map = {}
        return parse_npu_smi_info(summary, chip_map)

    def discover(self) -> list[DiscoveredDevice]:
        rows = self._read()
        if not rows:
            raise NotPresent("npu-smi lists no NPUs")
        return [d for d, _ in rows]

    def sample(self) -> list[DeviceSample]:
        return [s for _, s in self._read()]
