"""Nodes, devices and leases as the control plane stores and reasons about them.

Validation lives here so that every entry point (gRPC, CLI, tests, a future REST edge) rejects the
same bad input with the same field-named message. Limits are deliberately generous but finite:
an "absurd" value (a device with 0 bytes or 100 TiB of memory, 10,000 devices on one node, a lease
that ends before it starts) is a bug or an attack, never a real machine.

Stored format: :class:`NodeRecord` as pydantic JSON under ``/tokenfab/v1/nodes/<node_id>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tokenfab.errors import PermanentError

GiB = 1024**3
MIN_DEVICE_MEMORY = 256 * 1024**2  # 256 MiB: smaller is no accelerator we can place a model on
MAX_DEVICE_MEMORY = 2 * 1024**4  # 2 TiB: ten times today's largest HBM stack
MAX_DEVICES_PER_NODE = 64
MAX_DEVICE_INDEX = 1024
MAX_LABELS = 64
NODE_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
LABEL_KEY_RE = re.compile(r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


class Vendor(StrEnum):
    NVIDIA = "nvidia"
    ASCEND = "ascend"
    BIREN = "biren"
    METAX = "metax"


class DeviceHealth(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class NodeState(StrEnum):
    REGISTERING = "registering"
    READY = "ready"
    SUSPECT = "suspect"
    LOST = "lost"
    CORDONED = "cordoned"
    DRAINING = "draining"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class Device(_Model):
    uuid: Annotated[str, Field(min_length=1, max_length=128)]
    index: Annotated[int, Field(ge=0, lt=MAX_DEVICE_INDEX)]
    model: Annotated[str, Field(min_length=1, max_length=64)]
    # 0 = not reported by the vendor tool; allowed only for an unhealthy device (see NodeRegistration)
    memory_bytes: Annotated[int, Field(ge=0, le=MAX_DEVICE_MEMORY)]
    numa_node: Annotated[int, Field(ge=-1, le=1024)] = -1
    pci_bus_id: Annotated[str, Field(max_length=64)] = ""
    health: DeviceHealth = DeviceHealth.HEALTHY
    health_reason: Annotated[str, Field(max_length=256)] = ""

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GiB


class LeaseTerms(_Model):
    provider: Annotated[str, Field(min_length=1, max_length=128)]
    lease_id: Annotated[str, Field(min_length=1, max_length=128)]
    start_time: datetime
    end_time: datetime
    price_per_accelerator_hour: Annotated[float, Field(ge=0, le=10_000, allow_inf_nan=False)]
    preemptible: bool = False

    @field_validator("start_time", "end_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end_time <= self.start_time:
            raise ValueError("end_time must be after start_time")
        return self


class NodeRegistration(_Model):
    """What an agent says about its node. Re-registering the same facts changes nothing."""

    node_id: str
    cluster: Annotated[str, Field(min_length=1, max_length=63)]
    region: Annotated[str, Field(max_length=63)] = ""
    vendor: Vendor
    devices: Annotated[tuple[Device, ...], Field(min_length=1, max_length=MAX_DEVICES_PER_NODE)]
    lease: LeaseTerms | None = None
    agent_version: Annotated[str, Field(max_length=64)] = ""
    labels: dict[str, Annotated[str, Field(max_length=256)]] = Field(default_factory=dict)

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        if not NODE_ID_RE.match(value):
            raise ValueError(
                "must be 1-63 lowercase letters, digits, '.', '_' or '-', alphanumeric at both ends"
            )
        return value

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError("must be 1-63 letters, digits, '.', '_' or '-', alphanumeric at both ends")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        for key in value:
            if not LABEL_KEY_RE.match(key):
                raise ValueError(f"label key {key[:80]!r} is not a valid key")
        return value

    @model_validator(mode="after")
    def _devices_unique(self) -> Self:
        seen_uuid: dict[str, int] = {}
        seen_index: dict[int, int] = {}
        for position, device in enumerate(self.devices):
            if device.memory_bytes < MIN_DEVICE_MEMORY and device.health is not DeviceHealth.UNHEALTHY:
                raise _FieldError(
                    f"devices[{position}].memory_bytes",
                    f"must be at least {MIN_DEVICE_MEMORY // 1024**2} MiB (less: unhealthy devices only)",
                )
            if device.uuid in seen_uuid:
                raise _FieldError(
                    f"devices[{position}].uuid",
                    f"duplicate uuid {device.uuid!r} (also devices[{seen_uuid[device.uuid]}])",
                )
            if device.index in seen_index:
                raise _FieldError(
                    f"devices[{position}].index",
                    f"duplicate index {device.index} (also devices[{seen_index[device.index]}])",
                )
            seen_uuid[device.uuid] = position
            seen_index[device.index] = position
        return self

    @property
    def accelerator(self) -> str:
        """The node's accelerator model; mixed nodes list their models joined by '+'."""
        return "+".join(dict.fromkeys(d.model for d in self.devices))


@dataclass(frozen=True, slots=True)
class DeviceTelemetry:
    """One device's live sample. Kept in memory on the leader, never written per beat.

    The hot path (every device of every heartbeat) uses a slotted dataclass checked by
    :meth:`check` instead of a pydantic model: the same field-named errors at about a tenth of
    the cost (see docs/benchmarks.md).
    """

    index: int
    utilization_percent: float = 0.0
    memory_used_bytes: int = 0
    temperature_celsius: float = 0.0
    ecc_uncorrected_errors: int = 0
    xid_errors: int = 0
    health: DeviceHealth = DeviceHealth.HEALTHY
    health_reason: str = ""

    def check(self) -> None:
        """Raise ``ValueError`` carrying ``.field`` for the first out-of-range field."""
        if not 0 <= self.index < MAX_DEVICE_INDEX:
            raise _FieldError("index", f"must be between 0 and {MAX_DEVICE_INDEX - 1}")
        if not 0.0 <= self.utilization_percent <= 100.0:  # also false for NaN
            raise _FieldError("utilization_percent", "must be a number between 0 and 100")
        if not 0 <= self.memory_used_bytes <= MAX_DEVICE_MEMORY:
            raise _FieldError("memory_used_bytes", f"must be between 0 and {MAX_DEVICE_MEMORY}")
        if not -50.0 <= self.temperature_celsius <= 200.0:
            raise _FieldError("temperature_celsius", "must be a number between -50 and 200")
        if self.ecc_uncorrected_errors < 0 or self.xid_errors < 0:
            raise _FieldError("ecc_uncorrected_errors", "must not be negative")
        if len(self.health_reason) > 256:
            raise _FieldError("health_reason", "at most 256 characters")


class NodeRecord(_Model):
    """The persisted node: its registration plus the control plane's conclusions."""

    registration: NodeRegistration
    state: NodeState
    state_reason: str = ""
    state_since: datetime
    cordoned: bool = False
    cordon_reason: str = ""
    draining: bool = False
    # Per-device health as last reported; persisted because it changes placement, and only
    # written when it changes (not per beat).
    device_health: dict[int, tuple[DeviceHealth, str]] = Field(default_factory=dict)
    # An operator's change to the lease (revoked with a notice, or extended): wins over what the
    # agent registers, so an agent restart does not undo a revocation.
    lease_end_override: datetime | None = None
    lease_note: str = ""

    @property
    def node_id(self) -> str:
        return self.registration.node_id

    @property
    def lease_end(self) -> datetime | None:
        """When the node's lease ends (None: owned)."""
        if self.registration.lease is None:
            return None
        return self.lease_end_override or self.registration.lease.end_time


class _FieldError(PermanentError, ValueError):
    """A model-level check that blames one nested field (pydantic would blame the model)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def validation_message(exc: ValidationError, *, prefix: str = "") -> tuple[str, str]:
    """``(field, message)`` for the first error of a pydantic ValidationError.

    Field paths are written the way a user would: ``devices[1].memory_bytes``.
    """
    first = exc.errors(include_url=False)[0]
    ctx_error = first.get("ctx", {}).get("error")
    if isinstance(ctx_error, _FieldError):
        return prefix + ctx_error.field, ctx_error.message
    path = ""
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return prefix + (path or "request"), message
