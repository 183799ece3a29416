"""Huawei Ascend discovery from ``npu-smi info``, ``npu-smi info -m`` and ``npu-smi info -t usages``.

``npu-smi info`` prints a header of two rows and then two rows per chip; its columns are found
by their header labels (:mod:`agents.discovery.tables`), because they move between versions and
boards (real captures in tests/fixtures/discovery, see its README)::

    | NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
    | Chip  Phy-ID              | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
    | 0     Ascend910           | OK            | 178.5       36                0    / 0             |
    | 0     0                   | 0000:9D:00.0  | 0           0    / 0          3416 / 65536         |

The second header row reads ``Chip`` (910A/910B), ``Chip Device`` (310/310P) or ``Chip Phy-ID``
(Atlas A3); old npu-smi has no hugepages column and 310P has no HBM column. After the chips
comes a process table (``NPU Chip | Process id | Process name | Process memory(MB)``) whose rows
look like chip rows to a positional parser; it is recognised by its header and skipped.

Each chip is one device. Its index (the ASCEND_RT_VISIBLE_DEVICES number) is the chip's logical
id from ``npu-smi info -m``, read by its column names (``NPU ID``, ``Chip ID``, ``Chip Logic ID``,
and on A3 also ``Chip Phy-ID``); without the map, chips are numbered in table order. The uuid is
the PCI bus id when no other chip prints the same one; the two chips of an Atlas 300I Duo share
a Bus-Id and some boards print ``NA``, so those chips get ``ascend-<bus>-chip<chip>`` and
``ascend-npu<npu>-chip<chip>``. Memory is the HBM total when the chip has HBM, else the
DDR Memory-Usage total; when neither is printed, ``npu-smi info -t usages -i <npu>`` is asked,
and if that fails too the chip is reported unhealthy with the reason instead of failing the node.

Health maps npu-smi's words (Huawei's npu-smi reference lists OK, Warning, Alarm, Critical and
UNKNOWN): OK is healthy, warnings are degraded, alarms and anything unknown are unhealthy.
The model is one normalised name whatever the source: the table says ``Ascend910`` or ``910B3``,
the map says ``Ascend 910B3`` or ``Ascend xxx`` (a placeholder); the most specific numbered name
wins. A bare ``910`` in the A3 layout (the ``Phy-ID`` label, printed for chip type 910_93) is the
Ascend 910C, whose package carries two such dies.

DCMI (libdcmi.so) would avoid the text parsing but needs the driver's headers and ignores
ASCEND_RT_VISIBLE_DEVICES; npu-smi is present wherever the driver is.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace

from agents.discovery.base import (
    BUS_ID,
    UNHEALTHY,
    DeviceSample,
    DiscoveredDevice,
    MiB,
    NotPresent,
    ToolFailed,
    bounded,
    distinct,
    is_number,
    judge_health,
    normalise_model,
    numa_node_of,
    parse_float,
    parse_int,
    run_tool,
    vendor_state,
    worst,
)
from agents.discovery.tables import Block, Row, blocks, row_fields, used_total
from tokenfab.logs import get_logger

log = get_logger("discovery.ascend")

HEALTH_OK = ("OK",)
HEALTH_DEGRADED = ("Warning", "General Warning", "Minor Warning", "Minor")
HEALTH_BAD = ("Alarm", "Critical", "Major", "Major Warning", "Error", "Fault", "Emergency")
_PLACEHOLDER_NAMES = {"", "xxx", "-", "na"}
_MAP_COLUMNS = ("NPU ID", "Chip ID", "Chip Logic ID", "Chip Phy-ID", "Chip Name", "Slot ID", "Device ID")


@dataclass(frozen=True, slots=True)
class ChipMapEntry:
    logic_id: int | None
    phy_id: int | None
    name: str


@dataclass(frozen=True, slots=True)
class AscendChip:
    """One chip as read from ``npu-smi info``: its identity and the device/sample pair."""

    npu_id: int
    chip_id: int
    device: DiscoveredDevice
    sample: DeviceSample
    memory_known: bool


def parse_chip_map(text: str) -> dict[tuple[int, int], ChipMapEntry]:
    """``npu-smi info -m`` by its column names: (npu id, chip id) -> entry. Chips without a
    logical id (the board MCU, printed with ``-``) are left out. Raises ToolFailed without a header."""
    lines = [line for line in text.splitlines() if line.strip()]
    at = next((i for i, line in enumerate(lines) if "NPU ID" in line and "Chip ID" in line), None)
    if at is None:
        raise ToolFailed("npu-smi info -m: no 'NPU ID ... Chip ID' header")
    header = lines[at]
    for name in _MAP_COLUMNS:
        header = header.replace(name, name.replace(" ", "_"))
    columns = header.split()
    out: dict[tuple[int, int], ChipMapEntry] = {}
    for line in lines[at + 1 :]:
        values = line.split(None, len(columns) - 1)
        row = dict(zip(columns, values, strict=False))
        npu, chip = row.get("NPU_ID", ""), row.get("Chip_ID", "")
        logic = row.get("Chip_Logic_ID", "-")
        if not (is_number(npu) and is_number(chip)) or not is_number(logic):
            continue  # the MCU row ('-'), a footer or a line we do not understand
        phy = row.get("Chip_Phy-ID", "")
        out[(int(npu), int(chip))] = ChipMapEntry(
            int(logic), int(phy) if is_number(phy) else None, row.get("Chip_Name", "").strip()
        )
    return out


def parse_usages(text: str) -> dict[int, dict[str, str]]:
    """``npu-smi info -t usages -i N``: chip id -> {field: value}. Paragraphs without a Chip ID
    (the NPU header, the MCU) are skipped."""
    out: dict[int, dict[str, str]] = {}
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in paragraph.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        chip = fields.get("Chip ID", "")
        if is_number(chip):
            out[int(chip)] = fields
    return out


def capacity_mb(fields: dict[str, str]) -> int:
    """A chip's memory from its usages: HBM when it has any, else DDR; 0 when neither."""
    hbm = parse_int(fields.get("HBM Capacity(MB)", ""), default=0)
    return hbm if hbm > 0 else parse_int(fields.get("DDR Capacity(MB)", ""), default=0)


def ascend_model(table_name: str, map_name: str, *, a3_layout: bool) -> str:
    """One model name from the two sources: the most specific numbered name wins."""
    names = [
        normalise_model(n) for n in (map_name, table_name) if n.strip().lower() not in _PLACEHOLDER_NAMES
    ]
    names = [n for n in names if n.lower() not in _PLACEHOLDER_NAMES]
    numbered = [n for n in names if n[:1].isdigit()]
    pool = numbered or names
    if not pool:
        return "Ascend"
    best = pool[0]
    for other in pool[1:]:
        if other.startswith(best) and len(other) > len(best):
            best = other  # 910 vs 910B3: the longer one says more
    if best == "910" and a3_layout:
        return "910C"
    return best


def _is_device_header(block: Block) -> bool:
    rows = block.rows
    return (
        len(rows) >= 2
        and rows[0][0].split()[:1] == ["NPU"]
        and any(c.startswith("Health") for c in rows[0])
        and rows[1][0].split()[:1] == ["Chip"]
    )


def _is_process_header(block: Block) -> bool:
    return any("Process id" in c or "Process name" in c for row in block.rows for c in row)


def _device_rows(text: str) -> tuple[tuple[Row, Row], list[Row]]:
    """The two header rows and the data rows of the chip table (process table excluded)."""
    header: tuple[Row, Row] | None = None
    rows: list[Row] = []
    for block in blocks(text):
        if header is None:
            if _is_device_header(block):
                header = (block.rows[0], block.rows[1])
                rows.extend(block.rows[2:])
            continue
        if _is_process_header(block) or _is_device_header(block):
            break
        rows.extend(block.rows)
    if header is None:
        raise ToolFailed("npu-smi info: no 'NPU Name | Health' table header in the output")
    return header, rows


def parse_npu_smi_info(
    text: str, chip_map: dict[tuple[int, int], ChipMapEntry] | None = None
) -> list[AscendChip]:
    """Every chip of ``npu-smi info``. A chip that can be identified but not fully read is
    returned unhealthy with the reason; ToolFailed only when no chip can be identified at all."""
    (head1, head2), rows = _device_rows(text)
    a3_layout = "Phy-ID" in head2[0]
    chip_map = chip_map or {}
    parsed: list[tuple[dict[str, str], dict[str, str], list[str]]] = []
    problems: list[str] = []
    i = 0
    while i < len(rows):
        first = rows[i]
        f1, p1 = row_fields(head1, first, rest=("Name",))
        if not is_number(f1.get("NPU", "")):
            problems.append(f"row {first!r} is not a chip row")
            i += 1
            continue
        second = rows[i + 1] if i + 1 < len(rows) else ()
        f2, p2 = row_fields(head2, second) if second else ({}, ["second row missing"])
        if not is_number(f2.get("Chip", "")):
            problems.append(f"NPU {f1['NPU']}: no chip row after {first!r}")
            i += 1
            continue
        parsed.append((f1, f2, p1 + p2))
        i += 2
    if not parsed:
        detail = "; ".join(problems) or "the table has no chip rows"
        raise ToolFailed(f"npu-smi info: no chip could be read ({detail})")
    for problem in problems:
        log.warning("npu_smi.row_skipped", problem=problem)

    bus_count = Counter(f2.get("Bus-Id", "").upper() for _, f2, _ in parsed)
    chips: list[AscendChip] = []
    for position, (f1, f2, cell_problems) in enumerate(parsed):
        npu_id, chip_id = int(f1["NPU"]), int(f2["Chip"])
        entry = chip_map.get((npu_id, chip_id))
        bus = f2.get("Bus-Id", "")
        if BUS_ID.match(bus) and bus_count[bus.upper()] == 1:
            uuid = f"ascend-{bus.lower()}"
        elif BUS_ID.match(bus):
            uuid = f"ascend-{bus.lower()}-chip{chip_id}"  # Atlas 300I Duo: two chips, one Bus-Id
        else:
            uuid = f"ascend-npu{npu_id}-chip{chip_id}"  # Bus-Id printed as NA
        memory = next(
            (
                pair
                for pair in (
                    used_total(f2.get("HBM-Usage(MB)", "")),
                    used_total(f2.get("Memory-Usage(MB)", "")),
                )
                if pair is not None and pair[1] > 0
            ),
            None,
        )
        temperature = parse_float(f1.get("Temp(C)", ""))
        verdicts = [
            judge_health(
                temperature_c=temperature,
                state=vendor_state(
                    f1.get("Health", ""),
                    healthy=HEALTH_OK,
                    degraded=HEALTH_DEGRADED,
                    unhealthy=HEALTH_BAD,
                    what="npu-smi health",
                ),
            )
        ]
        if memory is None:
            verdicts.append((UNHEALTHY, "npu-smi printed no memory total"))
        if cell_problems:
            verdicts.append((UNHEALTHY, "npu-smi row not understood: " + "; ".join(cell_problems)))
        health, reason = worst(*verdicts)
        index = entry.logic_id if entry is not None and entry.logic_id is not None else position
        used_mb, total_mb = memory or (0, 0)
        chips.append(
            AscendChip(
                npu_id=npu_id,
                chip_id=chip_id,
                memory_known=memory is not None,
                device=DiscoveredDevice(
                    uuid=uuid,
                    index=index,
                    model=ascend_model(f1.get("Name", ""), entry.name if entry else "", a3_layout=a3_layout),
                    memory_bytes=total_mb * MiB,
                    numa_node=numa_node_of(bus),
                    pci_bus_id=bus if BUS_ID.match(bus) else "",
                    health=health,
                    health_reason=reason,
                ),
                sample=DeviceSample(
                    index=index,
                    utilization_percent=parse_float(f2.get("AICore(%)", "")),
                    memory_used_bytes=used_mb * MiB,
                    temperature_celsius=temperature,
                    health=health,
                    health_reason=reason,
                ),
            )
        )
    if len({c.device.index for c in chips}) != len(chips):
        log.warning("npu_smi.duplicate_logical_ids", ids=sorted(c.device.index for c in chips))
        chips = [
            replace(c, device=replace(c.device, index=i), sample=replace(c.sample, index=i))
            for i, c in enumerate(chips)
        ]
    first_chip: dict[str, AscendChip] = {}
    for chip in chips:  # keyed as distinct() will name them (it may shorten a garbled uuid)
        first_chip.setdefault(bounded(chip.device, "npu-smi")[0].uuid, chip)
    unique = distinct([(c.device, c.sample) for c in chips], tool="npu-smi")
    return [replace(first_chip[d.uuid], device=d, sample=smp) for d, smp in unique]


def fill_memory(chip: AscendChip, usages: dict[int, dict[str, str]]) -> AscendChip:
    """A chip whose summary row had no memory total, completed from ``-t usages`` when it can be."""
    total_mb = capacity_mb(usages.get(chip.chip_id, {}))
    if chip.memory_known or total_mb <= 0:
        return chip
    reasons = [r for r in chip.device.health_reason.split("; ") if r != "npu-smi printed no memory total"]
    health = chip.device.health if reasons else judge_health()[0]
    reason = "; ".join(reasons)
    return replace(
        chip,
        memory_known=True,
        device=replace(chip.device, memory_bytes=total_mb * MiB, health=health, health_reason=reason),
        sample=replace(chip.sample, health=health, health_reason=reason),
    )


class AscendBackend:
    name = "ascend"
    vendor = "ascend"

    def _read(self) -> list[AscendChip]:
        summary = run_tool(["npu-smi", "info"])
        try:
            chip_map = parse_chip_map(run_tool(["npu-smi", "info", "-m"]))
        except (ToolFailed, NotPresent) as exc:
            log.warning("npu_smi.no_chip_map", error=str(exc))
            chip_map = {}
        chips = parse_npu_smi_info(summary, chip_map)
        missing = sorted({c.npu_id for c in chips if not c.memory_known})
        for npu_id in missing:
            try:
                usages = parse_usages(run_tool(["npu-smi", "info", "-t", "usages", "-i", str(npu_id)]))
            except (ToolFailed, NotPresent) as exc:
                log.warning("npu_smi.usages_failed", npu=npu_id, error=str(exc))
                continue
            chips = [fill_memory(c, usages) if c.npu_id == npu_id else c for c in chips]
        return chips

    def discover(self) -> list[DiscoveredDevice]:
        return [c.device for c in self._read()]

    def sample(self) -> list[DeviceSample]:
        return [c.sample for c in self._read()]
