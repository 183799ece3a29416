"""Biren discovery: ``brsmi`` when it answers, else counting ``/dev/biren/card_N``.

No public capture of brsmi output could be found (checked November 2026), so this parser is
defensive by design: it asks brsmi for the nvidia-smi-style CSV query that Chinese vendors'
SMI tools commonly mirror, accepts any row with an index, a name and a memory total, and treats
anything else as "tool output not understood" (ToolFailed), never as zero devices. When brsmi
is absent or unreadable the backend counts the device nodes the kernel driver creates,
``/dev/biren/card_<N>``, and takes the model and memory from the agent's configuration
(``--biren-model``, default BR104 with 32 GiB) because the device node says neither.
Replace the CSV assumption with the real format as soon as a capture is available.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from agents.discovery.base import (
    DeviceSample,
    DiscoveredDevice,
    MiB,
    NotPresent,
    ToolFailed,
    distinct,
    judge_health,
    normalise_model,
    parse_float,
    parse_int,
    run_tool,
)

BRSMI_COMMAND = [
    "brsmi",
    "--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu,temperature.gpu",
    "--format=csv,noheader,nounits",
]
KNOWN_MEMORY_GIB = {"BR100": 64, "BR104": 32, "BR104P": 32, "BR106": 64}
_CARD = re.compile(r"^card_?(\d+)$")


def parse_brsmi_csv(text: str) -> list[tuple[DiscoveredDevice, DeviceSample]]:
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:  # a stray carriage return or quote: not output we understand
        raise ToolFailed(f"brsmi: not the expected CSV ({exc})") from exc
    out: list[tuple[DiscoveredDevice, DeviceSample]] = []
    for line_no, row in enumerate(rows, start=1):
        fields = [f.strip() for f in row]
        if not fields or not "".join(fields):
            continue
        if len(fields) < 4 or parse_int(fields[0], default=-1) < 0 or parse_int(fields[3], default=0) <= 0:
            raise ToolFailed(f"brsmi line {line_no}: not the expected CSV ({','.join(fields)[:80]!r})")
        index = parse_int(fields[0])
        temperature = parse_float(fields[6]) if len(fields) > 6 else 0.0
        health, reason = judge_health(temperature_c=temperature)
        out.append(
            (
                DiscoveredDevice(
                    uuid=fields[1] or f"biren-{index}",
                    index=index,
                    model=normalise_model(fields[2]),
                    memory_bytes=parse_int(fields[3]) * MiB,
                ),
                DeviceSample(
                    index=index,
                    memory_used_bytes=parse_int(fields[4]) * MiB if len(fields) > 4 else 0,
                    utilization_percent=parse_float(fields[5]) if len(fields) > 5 else 0.0,
                    temperature_celsius=temperature,
                    health=health,
                    health_reason=reason,
                ),
            )
        )
    return distinct(out, tool="brsmi")


def count_cards(dev_dir: Path, *, model: str, memory_gib: int | None = None) -> list[DiscoveredDevice]:
    """Devices from ``/dev/biren/card_N`` nodes; model and memory come from configuration."""
    try:
        names = sorted(p.name for p in dev_dir.iterdir())
    except OSError as exc:
        raise NotPresent(f"{dev_dir}: {exc.strerror}") from exc
    indices = sorted(int(m.group(1)) for m in (_CARD.match(n) for n in names) if m)
    if not indices:
        raise NotPresent(f"no card_N device nodes in {dev_dir}")
    gib = memory_gib or KNOWN_MEMORY_GIB.get(model.upper(), 32)
    return [
        DiscoveredDevice(uuid=f"biren-card{i}", index=i, model=model, memory_bytes=gib * 1024 * MiB)
        for i in indices
    ]


class BirenBackend:
    name = "biren"
    vendor = "biren"

    def __init__(
        self, *, dev_dir: Path = Path("/dev/biren"), model: str = "BR104", memory_gib: int | None = None
    ):
        self._dev_dir = dev_dir
        self._model = model
        self._memory_gib = memory_gib
        self._use_tool = True
        self._devices: list[DiscoveredDevice] = []
        self.why_not: list[str] = []

    def discover(self) -> list[DiscoveredDevice]:
        tool_failed = False
        try:
            rows = parse_brsmi_csv(run_tool(BRSMI_COMMAND))
            if rows:
                return [d for d, _ in rows]
            self.why_not.append("brsmi listed no devices")
            tool_failed = True
        except NotPresent as exc:
            self.why_not.append(f"brsmi: {exc}")
        except ToolFailed as exc:
            self.why_not.append(f"brsmi: {exc}")
            tool_failed = True
        self._use_tool = False
        try:
            self._devices = count_cards(self._dev_dir, model=self._model, memory_gib=self._memory_gib)
        except NotPresent as exc:
            if tool_failed:  # brsmi is installed but told us nothing: a broken node, said loudly
                raise ToolFailed("; ".join([*self.why_not, str(exc)])) from exc
            raise
        return self._devices

    def sample(self) -> list[DeviceSample]:
        if self._use_tool:
            return [s for _, s in parse_brsmi_csv(run_tool(BRSMI_COMMAND))]
        # Device nodes say nothing about load; report presence (a vanished node is unhealthy).
        return [
            DeviceSample(index=d.index)
            if (self._dev_dir / f"card_{d.index}").exists()
            else DeviceSample(index=d.index, health="unhealthy", health_reason="device node disappeared")
            for d in self._devices
        ]
