"""MetaX discovery from the ``mx-smi`` summary table.

Each GPU takes two rows between ``+---+`` rules (public captures: the PaddlePaddle ERNIE MetaX
guide, mx-smi 2.2.4 on C550; the SwanLab MetaX tutorial, mx-smi 2.1.12 on C500)::

    | GPU         NAME                   | Bus-id              | GPU-Util             |
    | Temp        Pwr:Usage/Cap          | Memory-Usage        | GPU-State            |
    | 0           MetaX C500             | 0000:0e:00.0        | 0%                   |
    | 36C         69W / 350W             | 5680/65536 MiB      | Available            |

Older mx-smi prints ``MXC500`` and a bare ``Power`` column; newer ones add Persistence-M/sGPU-M
columns. The parser keys on what every version has: an index and a name in the first row, a
``C`` temperature and ``used/total MiB`` in the second. pymxsml would give the same facts
without parsing but is only distributed inside the MACA SDK; mx-smi ships with the driver.
"""

from __future__ import annotations

import itertools
import re

from agents.discovery.base import (
    DeviceSample,
    DiscoveredDevice,
    MiB,
    NotPresent,
    judge_health,
    normalise_model,
    numa_node_of,
    parse_float,
    run_tool,
)

_ROW = re.compile(r"^\|(.*)\|(.*)\|(.*)\|\s*$")
_MEM = re.compile(r"(\d+)\s*/\s*(\d+)\s*MiB")
_TEMP = re.compile(r"^(-?\d+(?:\.\d+)?)C\b")


def parse_mx_smi(text: str) -> list[tuple[DiscoveredDevice, DeviceSample]]:
    rows = [[c.strip() for c in m.groups()] for m in (_ROW.match(line) for line in text.splitlines()) if m]
    out: list[tuple[DiscoveredDevice, DeviceSample]] = []
    for first, second in itertools.pairwise(rows):
        head = first[0].split()
        if len(head) < 2 or not head[0].isdigit():
            continue
        temp_match = _TEMP.match(second[0])
        mem_match = _MEM.search(second[1])
        if temp_match is None or mem_match is None:
            continue
        index = int(head[0])
        name_parts = [p for p in head[1:] if p not in ("On", "Off")]
        temperature = float(temp_match.group(1))
        state = second[2].split()[0] if second[2] else ""
        health, reason = judge_health(
            temperature_c=temperature, vendor_status="" if state in ("", "Available") else state
        )
        bus_id = first[1].split()[0] if first[1] else ""
        out.append(
            (
                DiscoveredDevice(
                    uuid=f"metax-{bus_id.lower()}" if bus_id else f"metax-{index}",
                    index=index,
                    model=normalise_model(" ".join(name_parts)),
                    memory_bytes=int(mem_match.group(2)) * MiB,
                    numa_node=numa_node_of(bus_id),
                    pci_bus_id=bus_id,
                ),
                DeviceSample(
                    index=index,
                    utilization_percent=parse_float(first[2].split()[0]) if first[2] else 0.0,
                    memory_used_bytes=int(mem_match.group(1)) * MiB,
                    temperature_celsius=temperature,
                    health=health,
                    health_reason=reason,
                ),
            )
        )
    return out


class MetaxBackend:
    name = "metax"
    vendor = "metax"

    def discover(self) -> list[DiscoveredDevice]:
        rows = parse_mx_smi(run_tool(["mx-smi"]))
        if not rows:
            raise NotPresent("mx-smi lists no GPUs")
        return [d for d, _ in rows]

    def sample(self) -> list[DeviceSample]:
        return [s for _, s in parse_mx_smi(run_tool(["mx-smi"]))]
