"""MetaX discovery from the ``mx-smi`` summary table, or ``ht-smi`` on MetaX's HPCC stack.

``ht-smi`` (HPCC, the "Mars" boards such as the X201) prints the same tables as ``mx-smi``
(MACA). Each GPU takes two rows under a two-row header; the header is found by its labels and
every column is read by its label, because the layout changed between versions (real captures
in tests/fixtures/discovery, see its README)::

    mx-smi 2.1.x / 2.2.4        | GPU  NAME | Bus-id | GPU-Util |              (three columns)
                                | Temp Pwr:Usage/Cap | Memory-Usage | GPU-State |
    mx-smi 2.2.6 - 2.2.8        | GPU NAME Persistence-M | Bus-id | GPU-Util sGPU-M |
                                | Temp Pwr:Usage/Cap Perf | Memory-Usage | GPU-State |
    mx-smi 2.3.1, ht-smi 2.2.9  | Board Name | GPU Persist-M | Bus-id | GPU-Util sGPU-M |
                                | Pwr:Usage/Cap | Temp Perf | Memory-Usage | GPU-State |

Old versions print ``Power`` instead of ``Pwr:Usage/Cap`` and no GPU-State; unknown columns are
ignored, but a layout that lacks GPU-State and is not one of those old layouts leaves its GPUs
unhealthy (a renamed state column must not read as "healthy"). The process table that follows
(``| Process: |``) is a separate table and is skipped. GPU-State ``Available`` is healthy; any other
state word is unhealthy with the word in the reason (MetaX's exporter describes the state as "0
(not available) / 1 (available)"). A GPU whose row cannot be read is reported unhealthy with the
reason; only output in which no GPU can be identified is an error (ToolFailed), also when the tool
is present: that is never "not present".

The device index is the ``GPU`` column; the uuid is ``metax-<bus id>``. pymxsml would give the
same facts without parsing but ships only inside the MACA SDK; mx-smi ships with the driver.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from agents.discovery.base import (
    BUS_ID,
    UNHEALTHY,
    DeviceSample,
    DiscoveredDevice,
    MiB,
    NotPresent,
    ToolFailed,
    distinct,
    is_number,
    judge_health,
    normalise_model,
    numa_node_of,
    parse_float,
    run_tool,
    vendor_state,
    worst,
)
from agents.discovery.tables import Block, Row, blocks, row_fields, used_total
from tokenfab.logs import get_logger

log = get_logger("discovery.metax")

TOOLS = ("mx-smi", "ht-smi")
STATE_OK = ("Available",)
_NAME_LABELS = ("NAME", "Name")
# Header labels of the layouts that print no GPU-State (mx-smi 2.1.6 and 2.1.12, see the fixtures).
OLD_LAYOUT_LABELS = frozenset(
    {"GPU", "NAME", "Bus-id", "GPU-Util", "Temp", "Power", "Pwr:Usage/Cap", "Memory-Usage"}
)


@dataclass(frozen=True, slots=True)
class MetaxReading:
    tool: str
    rows: list[tuple[DiscoveredDevice, DeviceSample]]


def _is_header(block: Block) -> bool:
    if len(block.rows) < 2:
        return False
    labels = {label for row in block.rows[:2] for cell in row for label in cell.split()}
    return "Bus-id" in labels and "Memory-Usage" in labels and bool({"GPU", "Board"} & labels)


def _device_rows(text: str, tool: str) -> tuple[tuple[Row, Row], list[Row]]:
    header: tuple[Row, Row] | None = None
    rows: list[Row] = []
    for block in blocks(text):
        if header is None:
            if _is_header(block):
                header = (block.rows[0], block.rows[1])
                rows.extend(block.rows[2:])
            continue
        if block.after_gap:
            break  # a blank line ends the GPU table; the process table follows
        rows.extend(block.rows)
    if header is None:
        raise ToolFailed(f"{tool}: no GPU table header (Bus-id / Memory-Usage) in the output")
    return header, rows


def parse_mx_smi(text: str, *, tool: str = "mx-smi") -> list[tuple[DiscoveredDevice, DeviceSample]]:
    """Every GPU of an ``mx-smi``/``ht-smi`` summary. ToolFailed when no GPU can be identified."""
    (head1, head2), rows = _device_rows(text, tool)
    parsed: list[tuple[int, dict[str, str], list[str]]] = []
    problems: list[str] = []
    i = 0
    while i < len(rows):
        f1, p1 = row_fields(head1, rows[i], rest=_NAME_LABELS)
        index_text = f1.get("GPU") or f1.get("Board") or ""
        if not is_number(index_text):
            problems.append(f"row {rows[i]!r} is not a GPU row")
            i += 1
            continue
        second = rows[i + 1] if i + 1 < len(rows) else ()
        f2, p2 = row_fields(head2, second) if second else ({}, ["second row missing"])
        parsed.append((int(index_text), {**f1, **f2}, p1 + p2))
        i += 2
    if not parsed:
        raise ToolFailed(f"{tool}: no GPU could be read ({'; '.join(problems) or 'the GPU table is empty'})")
    for problem in problems:
        log.warning("mx_smi.row_skipped", tool=tool, problem=problem)

    header_labels = {label for cell in head1 + head2 for label in cell.split()}
    has_state = "GPU-State" in header_labels
    # Only the known pre-2.2 layouts may lack GPU-State; any other layout without it (a renamed
    # or moved state column) cannot vouch for the GPU, so its GPUs are unhealthy, not healthy.
    old_layout = header_labels <= OLD_LAYOUT_LABELS
    bus_count = Counter(f.get("Bus-id", "").lower() for _, f, _ in parsed)
    out: list[tuple[DiscoveredDevice, DeviceSample]] = []
    for index, fields, cell_problems in parsed:
        bus = fields.get("Bus-id", "")
        unique_bus = BUS_ID.match(bus) is not None and bus_count[bus.lower()] == 1
        memory = used_total(fields.get("Memory-Usage", ""))
        temperature = parse_float(fields.get("Temp", ""))
        state = (
            vendor_state(fields.get("GPU-State", ""), healthy=STATE_OK, what=f"{tool} GPU-State")
            if has_state
            else judge_health()  # versions before 2.2 print no GPU-State column
            if old_layout
            else (UNHEALTHY, f"{tool} printed no GPU-State column in a table layout not known")
        )
        verdicts = [judge_health(temperature_c=temperature, state=state)]
        if memory is None or memory[1] <= 0:
            verdicts.append((UNHEALTHY, f"{tool} printed no memory total"))
        if cell_problems:
            verdicts.append((UNHEALTHY, f"{tool} row not understood: " + "; ".join(cell_problems)))
        health, reason = worst(*verdicts)
        used_mib, total_mib = memory if memory is not None and memory[1] > 0 else (0, 0)
        out.append(
            (
                DiscoveredDevice(
                    uuid=f"metax-{bus.lower()}" if unique_bus else f"metax-gpu{index}",
                    index=index,
                    model=normalise_model(fields.get("NAME") or fields.get("Name") or "MetaX"),
                    memory_bytes=total_mib * MiB,
                    numa_node=numa_node_of(bus),
                    pci_bus_id=bus if BUS_ID.match(bus) else "",
                    health=health,
                    health_reason=reason,
                ),
                DeviceSample(
                    index=index,
                    utilization_percent=parse_float(fields.get("GPU-Util", "")),
                    memory_used_bytes=used_mib * MiB,
                    temperature_celsius=temperature,
                    health=health,
                    health_reason=reason,
                ),
            )
        )
    return distinct(out, tool=tool)


def read_metax() -> MetaxReading:
    """Run ``mx-smi``, else ``ht-smi``. NotPresent only when neither tool is installed; a tool
    that runs but prints no readable GPU raises ToolFailed (loudly, never 'not present')."""
    missing: list[str] = []
    for tool in TOOLS:
        try:
            text = run_tool([tool])
        except NotPresent as exc:
            missing.append(str(exc))
            continue
        return MetaxReading(tool, parse_mx_smi(text, tool=tool))
    raise NotPresent("; ".join(missing))


class MetaxBackend:
    name = "metax"
    vendor = "metax"

    def __init__(self) -> None:
        self.tool = ""

    def discover(self) -> list[DiscoveredDevice]:
        reading = read_metax()
        self.tool = reading.tool
        return [d for d, _ in reading.rows]

    def sample(self) -> list[DeviceSample]:
        reading = read_metax()
        self.tool = reading.tool
        return [s for _, s in reading.rows]
