"""What every discovery backend returns, and the helpers they share.

Health is judged the same way for every vendor (:func:`judge_health`) so that "unhealthy" means
one thing to the scheduler whatever the chip: an uncorrectable memory error or an XID-class
fault makes a device unusable; a vendor's own warning or a hot chip makes it degraded. A vendor
state word is read through :func:`vendor_state` with that vendor's vocabulary, and a word outside
the vocabulary is *unhealthy* (with the word in the reason), never healthy: a new driver that
prints a state we have not seen must not put work on a chip we cannot vouch for.

One bad device never fails the node. A parser that can identify a device but not read all of it
returns the device with ``health="unhealthy"`` and the reason (for example "memory.total not
reported"); ``memory_bytes`` is then 0, meaning unknown. Only output in which no device can be
identified at all is an error (:class:`ToolFailed`), and then loudly: a tool that is present but
prints nothing we understand is never reported as "not present". Every parser ends with
:func:`distinct`, which also keeps each device and sample inside what the control plane accepts
(unique uuids and indices, field lengths and ranges): one garbled field would otherwise make it
refuse the node's registration or end its heartbeat stream, failing the node for one device.

Model names are normalised once, here (:func:`normalise_model`), whatever the source: 'NVIDIA H100
80GB HBM3' -> 'H100', 'MXC500' and 'MetaX C500' -> 'C500', 'Ascend910B3', 'Ascend 910B3' and
'910B3' -> '910B3'.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from tokenfab.errors import PermanentError, TemporaryError

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
_RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
TEMP_DEGRADED_C = 85.0
TEMP_UNHEALTHY_C = 95.0
MiB = 1024**2


class NotPresent(PermanentError):
    """This backend's vendor tool or library is not on this machine (not an error)."""


class ToolFailed(TemporaryError):
    """The tool is there but failed or printed something we cannot read (the next sample may do
    better)."""


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    """Static facts of one device. ``memory_bytes == 0`` means the tool did not report it, in
    which case ``health`` is unhealthy and ``health_reason`` says why."""

    uuid: str
    index: int
    model: str
    memory_bytes: int
    numa_node: int = -1
    pci_bus_id: str = ""
    health: str = HEALTHY
    health_reason: str = ""


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


def worst(*verdicts: tuple[str, str]) -> tuple[str, str]:
    """The worst ``(health, reason)`` of several; reasons of equally bad verdicts are joined."""
    top = max((v[0] for v in verdicts), key=_RANK.__getitem__, default=HEALTHY)
    reasons = [v[1] for v in verdicts if v[0] == top and v[1]]
    return top, "; ".join(dict.fromkeys(reasons))


def vendor_state(
    word: str,
    *,
    healthy: Iterable[str],
    degraded: Iterable[str] = (),
    unhealthy: Iterable[str] = (),
    what: str = "vendor state",
) -> tuple[str, str]:
    """``(health, reason)`` for a vendor's state word. Known healthy words are healthy, known
    degraded/unhealthy words say so, and *any other word* is unhealthy: unknown is never healthy."""
    text = " ".join(word.split())
    key = text.lower()
    if key in {w.lower() for w in healthy}:
        return HEALTHY, ""
    if key in {w.lower() for w in degraded}:
        return DEGRADED, f"{what} {text}"
    if key in {w.lower() for w in unhealthy}:
        return UNHEALTHY, f"{what} {text}"
    return UNHEALTHY, f"unknown {what} {text!r}" if text else f"no {what} printed"


def judge_health(
    *,
    temperature_c: float = 0.0,
    ecc_uncorrected: int = 0,
    xid_errors: int = 0,
    vendor_status: str = "",
    state: tuple[str, str] = (HEALTHY, ""),
) -> tuple[str, str]:
    """``(health, reason)`` from the signals every vendor exposes in some form.

    ``state`` is a verdict from :func:`vendor_state`; ``vendor_status`` is the older shortcut
    (an empty word means "no state printed"; a non-empty one goes through the generic vocabulary,
    so an unknown word is unhealthy).
    """
    verdicts = [state]
    if vendor_status.strip():
        verdicts.append(
            vendor_state(
                vendor_status,
                healthy=("ok", "healthy", "available"),
                degraded=("warning", "general warning", "minor", "minor warning"),
                unhealthy=("alarm", "critical", "error", "fault", "unhealthy", "major", "major warning"),
            )
        )
    if ecc_uncorrected > 0:
        verdicts.append((UNHEALTHY, f"{ecc_uncorrected} uncorrectable ECC errors"))
    if xid_errors > 0:
        verdicts.append((UNHEALTHY, f"{xid_errors} XID-class critical errors"))
    if temperature_c >= TEMP_UNHEALTHY_C:
        verdicts.append((UNHEALTHY, f"temperature {temperature_c:g}C >= {TEMP_UNHEALTHY_C:g}C"))
    elif temperature_c >= TEMP_DEGRADED_C:
        verdicts.append((DEGRADED, f"temperature {temperature_c:g}C >= {TEMP_DEGRADED_C:g}C"))
    return worst(*verdicts)


def run_tool(argv: list[str], *, timeout_s: float = 10.0) -> str:
    """Run a vendor tool; NotPresent when it is not installed, ToolFailed when it fails."""
    if shutil.which(argv[0]) is None:
        raise NotPresent(f"{argv[0]} not found on PATH")
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolFailed(f"{argv[0]} timed out after {timeout_s:g}s") from exc
    except OSError as exc:
        raise NotPresent(f"{argv[0]}: {exc.strerror}") from exc
    if done.returncode != 0:
        stderr = decode_output(done.stderr).strip()[:200]
        raise ToolFailed(f"{' '.join(argv)} exited {done.returncode}: {stderr}")
    return decode_output(done.stdout)


def decode_output(raw: bytes) -> str:
    """A tool's output as text. Bytes that are not UTF-8 (a tool printing in a GBK locale, a
    truncated multi-byte character) become U+FFFD instead of raising UnicodeDecodeError, which
    no caller expects: the parsers then see an unknown word, never a crash of the whole node."""
    return raw.decode("utf-8", errors="replace")


def is_number(text: str) -> bool:
    """ASCII digits only. ``str.isdigit`` also accepts '²' or '①', which ``int()`` then refuses:
    a garbled cell must be skipped as "not a number", not escape as ValueError and fail the node."""
    return text.isascii() and text.isdigit()


# What the control plane accepts for one device (controlplane/domain/nodes.py, Device); a value
# outside these bounds makes it refuse the whole node's registration, so it is caught here.
MAX_UUID_CHARS, MAX_MODEL_CHARS, MAX_INDEX, MAX_MEMORY_BYTES = 128, 64, 1024, 2 * 1024**4
MIN_MEMORY_BYTES = 256 * MiB  # less: only an unhealthy device may register


def bounded(device: DiscoveredDevice, tool: str) -> tuple[DiscoveredDevice, list[str]]:
    """The device with every field inside the control plane's bounds, and what had to change."""
    reasons: list[str] = []
    uuid, model, memory = device.uuid.strip(), device.model.strip(), device.memory_bytes
    if not uuid:
        uuid = f"{tool}-index{device.index}"
        reasons.append(f"{tool} printed no uuid")
    elif len(uuid) > MAX_UUID_CHARS:
        uuid = uuid[:MAX_UUID_CHARS]
        reasons.append(f"{tool} printed a uuid longer than {MAX_UUID_CHARS} characters")
    if not model:
        model = "unknown"
        reasons.append(f"{tool} printed no model name")
    elif len(model) > MAX_MODEL_CHARS:
        model = model[:MAX_MODEL_CHARS]
        reasons.append(f"{tool} printed a model name longer than {MAX_MODEL_CHARS} characters")
    if memory > MAX_MEMORY_BYTES:
        reasons.append(f"{tool} printed {memory // MiB} MiB of memory, more than any device has")
        memory = 0
    elif memory < MIN_MEMORY_BYTES and device.health != UNHEALTHY:
        reasons.append(f"{tool} printed {memory // MiB} MiB of memory, less than any accelerator has")
    if not 0 <= device.index < MAX_INDEX:
        reasons.append(f"{tool} printed index {device.index}, outside 0-{MAX_INDEX - 1}")
    return replace(device, uuid=uuid, model=model, memory_bytes=memory), reasons


MAX_REASON_CHARS = 256  # the control plane refuses a longer health reason (and ends the stream)


def bounded_sample(sample: DeviceSample, tool: str) -> tuple[DeviceSample, list[str]]:
    """The sample with every figure inside what the control plane accepts in a heartbeat
    (controlplane/domain/nodes.py, DeviceTelemetry.check); a figure outside it would end the
    agent's stream, so it is zeroed and named instead."""
    reasons: list[str] = []
    util, temp, used = sample.utilization_percent, sample.temperature_celsius, sample.memory_used_bytes
    if not 0.0 <= util <= 100.0:  # also NaN
        reasons.append(f"{tool} printed utilization {util:g}%")
        util = 0.0
    if not -50.0 <= temp <= 200.0:
        reasons.append(f"{tool} printed temperature {temp:g}C")
        temp = 0.0
    if not 0 <= used <= MAX_MEMORY_BYTES:
        reasons.append(f"{tool} printed {used // MiB} MiB of memory in use")
        used = 0
    if sample.ecc_uncorrected_errors < 0 or sample.xid_errors < 0:
        reasons.append(f"{tool} printed a negative error count")
    fixed = replace(
        sample,
        utilization_percent=util,
        temperature_celsius=temp,
        memory_used_bytes=used,
        ecc_uncorrected_errors=max(sample.ecc_uncorrected_errors, 0),
        xid_errors=max(sample.xid_errors, 0),
    )
    return fixed, reasons


def _clip(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."


def distinct(
    pairs: list[tuple[DiscoveredDevice, DeviceSample]], *, tool: str
) -> list[tuple[DiscoveredDevice, DeviceSample]]:
    """Devices the control plane can register (it refuses the whole node otherwise): unique
    uuids and indices, and every field within its bounds. Garbled or repeated output can list one
    device twice: a repeated uuid keeps its first row, and an index printed for several devices
    (or outside 0-1023) keeps it for the first in range and moves the others to the lowest unused
    indices. Every device involved is unhealthy with the reason, since the tool's output cannot
    say which row is right. Deterministic, so that discovery and sampling number devices alike."""
    checked = [(*bounded(d, tool), s) for d, s in pairs]
    by_uuid = Counter(d.uuid for d, _, _ in checked)
    first = {d.uuid: i for i, (d, _, _) in reversed(list(enumerate(checked)))}
    kept = [c for i, c in enumerate(checked) if first[c[0].uuid] == i]
    by_index = Counter(d.index for d, _, _ in kept)
    used = {i for i in by_index if 0 <= i < MAX_INDEX}
    taken: set[int] = set()
    free = (i for i in range(MAX_INDEX) if i not in used)
    out: list[tuple[DiscoveredDevice, DeviceSample]] = []
    for device, bounds, raw_sample in kept:
        sample, sample_bounds = bounded_sample(raw_sample, tool)
        reasons = [*bounds, *sample_bounds]
        index = device.index
        if by_uuid[device.uuid] > 1:
            reasons.append(f"{tool} listed uuid {device.uuid} {by_uuid[device.uuid]} times")
        if by_index[index] > 1:
            reasons.append(f"{tool} printed index {index} for {by_index[index]} devices")
        if index in taken or not 0 <= index < MAX_INDEX:
            index = next(free, -1)
            if index < 0:
                continue  # more than MAX_INDEX devices: the control plane refuses the node anyway
        taken.add(index)
        if reasons:
            health, reason = worst((device.health, device.health_reason), (UNHEALTHY, "; ".join(reasons)))
            device = replace(device, index=index, health=health, health_reason=reason)
            sample = replace(sample, index=index, health=health, health_reason=reason)
        device = replace(device, health_reason=_clip(device.health_reason))
        sample = replace(sample, health_reason=_clip(sample.health_reason))
        out.append((device, sample))
    return out


BUS_ID = re.compile(r"^(?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")


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


_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)")


def parse_int(text: str, *, default: int = 0) -> int:
    """Integer from a tool field; vendor placeholders ('[N/A]', 'NA', '-') give ``default``.
    A trailing unit ('81559 MiB', '0 %') is ignored."""
    value = parse_float(text, default=math.nan)
    return int(value) if math.isfinite(value) else default


def parse_float(text: str, *, default: float = 0.0) -> float:
    """Float from a tool field ('37C', '69.85 W', '12%'); placeholders give ``default``, and so
    does a digit string too long for a float (it would read as infinity)."""
    match = _NUMBER.match(text)
    value = float(match.group(1)) if match else default
    return value if math.isfinite(value) or not match else default


_PREFIX = re.compile(r"^(?:nvidia|tesla|metax|mars|huawei|ascend|biren)(?:\s+|(?=\d))", re.IGNORECASE)
_MODEL = re.compile(r"\b([A-Z]{1,4})[ -]?(\d{2,4}[A-Z]?\d?)\b")


def normalise_model(raw: str) -> str:
    """Short model name: 'NVIDIA H100 80GB HBM3' -> 'H100', 'MetaX C500'/'MXC500'/'MXC600-A' ->
    'C500'/'C600', 'Ascend 910B3'/'Ascend910B3' -> '910B3', 'Ascend910' -> '910',
    'NVIDIA GeForce RTX 4090' -> 'RTX4090', 'Mars X201' -> 'X201'."""
    text = " ".join(raw.split())
    while True:
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    if re.match(r"^MX[CN]\d", text):
        text = text[2:]
    if text[:1].isdigit():  # Ascend numbering: 310, 310P3, 910A, 910B3
        return text.split()[0]
    match = _MODEL.search(text)
    if match:
        return match.group(1) + match.group(2)
    return text.split()[0] if text else raw.strip()
