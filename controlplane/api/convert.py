"""Translation between wire messages (``tokenfab.v1``) and domain types.

Inbound conversions validate through the pydantic domain models and raise
:class:`~controlplane.errors.InvalidArgument` naming the offending field in the request's own
terms (``devices[2].memory_bytes``), so a client can fix exactly what was wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ValidationError

from controlplane.domain.nodes import (
    DeviceHealth,
    DeviceTelemetry,
    NodeRegistration,
    NodeState,
    Vendor,
    validation_message,
)
from controlplane.errors import InvalidArgument
from controlplane.fleet.types import CommandKind, NodeCommand, NodeView
from tokenfab.v1 import agent_pb2, types_pb2

VENDOR_TO_PB = {
    Vendor.NVIDIA: types_pb2.VENDOR_NVIDIA,
    Vendor.ASCEND: types_pb2.VENDOR_ASCEND,
    Vendor.BIREN: types_pb2.VENDOR_BIREN,
    Vendor.METAX: types_pb2.VENDOR_METAX,
}
VENDOR_FROM_PB = {v: k for k, v in VENDOR_TO_PB.items()}
HEALTH_TO_PB = {
    DeviceHealth.HEALTHY: types_pb2.DEVICE_HEALTH_HEALTHY,
    DeviceHealth.DEGRADED: types_pb2.DEVICE_HEALTH_DEGRADED,
    DeviceHealth.UNHEALTHY: types_pb2.DEVICE_HEALTH_UNHEALTHY,
}
HEALTH_FROM_PB = {v: k for k, v in HEALTH_TO_PB.items()}
STATE_TO_PB = {
    NodeState.REGISTERING: types_pb2.NODE_STATE_REGISTERING,
    NodeState.READY: types_pb2.NODE_STATE_READY,
    NodeState.SUSPECT: types_pb2.NODE_STATE_SUSPECT,
    NodeState.LOST: types_pb2.NODE_STATE_LOST,
    NodeState.CORDONED: types_pb2.NODE_STATE_CORDONED,
    NodeState.DRAINING: types_pb2.NODE_STATE_DRAINING,
}
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}
COMMAND_TO_PB = {
    CommandKind.CORDON: agent_pb2.COMMAND_KIND_CORDON,
    CommandKind.UNCORDON: agent_pb2.COMMAND_KIND_UNCORDON,
    CommandKind.DRAIN: agent_pb2.COMMAND_KIND_DRAIN,
    CommandKind.CONFIG: agent_pb2.COMMAND_KIND_CONFIG,
}


def vendor_from_pb(value: int, field: str = "vendor") -> Vendor:
    vendor: Vendor | None = VENDOR_FROM_PB.get(value)  # type: ignore[call-overload]
    if vendor is None:
        known = ", ".join(types_pb2.Vendor.Name(v) for v in VENDOR_FROM_PB)
        shown = types_pb2.Vendor.Name(value) if value in types_pb2.Vendor.values() else str(value)
        raise InvalidArgument(field, f"unknown vendor {shown}; expected one of {known}")
    return vendor


def health_from_pb(value: int, field: str) -> DeviceHealth:
    if value == types_pb2.DEVICE_HEALTH_UNSPECIFIED:
        return DeviceHealth.HEALTHY  # older agents that do not judge health
    health: DeviceHealth | None = HEALTH_FROM_PB.get(value)  # type: ignore[call-overload]
    if health is None:
        raise InvalidArgument(field, f"unknown device health {value}")
    return health


def ts_to_datetime(ts: Timestamp) -> datetime:
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)


def datetime_to_ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def registration_from_pb(request: agent_pb2.RegisterRequest) -> NodeRegistration:
    vendor = vendor_from_pb(request.vendor)
    devices: list[dict[str, Any]] = []
    for position, device in enumerate(request.devices):
        devices.append(
            {
                "uuid": device.uuid,
                "index": device.index,
                "model": device.model,
                "memory_bytes": device.memory_bytes,
                "numa_node": device.numa_node,
                "pci_bus_id": device.pci_bus_id,
                "health": health_from_pb(device.health, f"devices[{position}].health"),
                "health_reason": device.health_reason,
            }
        )
    lease: dict[str, Any] | None = None
    if request.HasField("lease"):
        for name in ("start_time", "end_time"):
            if not request.lease.HasField(name):
                raise InvalidArgument(f"lease.{name}", "is required when a lease is given")
        lease = {
            "provider": request.lease.provider,
            "lease_id": request.lease.lease_id,
            "start_time": ts_to_datetime(request.lease.start_time),
            "end_time": ts_to_datetime(request.lease.end_time),
            "price_per_accelerator_hour": request.lease.price_per_accelerator_hour,
            "preemptible": request.lease.preemptible,
        }
    try:
        return NodeRegistration.model_validate(
            {
                "node_id": request.node_id,
                "cluster": request.cluster,
                "region": request.region,
                "vendor": vendor,
                "devices": devices,
                "lease": lease,
                "agent_version": request.agent_version,
                "labels": dict(request.labels),
            }
        )
    except ValidationError as exc:
        raise InvalidArgument(*validation_message(exc)) from None


def telemetry_from_pb(samples: Sequence[types_pb2.DeviceTelemetry]) -> list[DeviceTelemetry]:
    """Hot path: called for every heartbeat. Hand-checked dataclasses, no pydantic."""
    out: list[DeviceTelemetry] = []
    seen: set[int] = set()
    for position, sample in enumerate(samples):
        index = sample.index
        if index in seen:
            raise InvalidArgument(f"devices[{position}].index", f"duplicate device index {index}")
        seen.add(index)
        health = HEALTH_FROM_PB.get(sample.health)
        if health is None:
            health = health_from_pb(sample.health, f"devices[{position}].health")
        item = DeviceTelemetry(
            index,
            sample.utilization_percent,
            sample.memory_used_bytes,
            sample.temperature_celsius,
            sample.ecc_uncorrected_errors,
            sample.xid_errors,
            health,
            sample.health_reason,
        )
        try:
            item.check()
        except ValueError as exc:
            field = getattr(exc, "field", "device")
            raise InvalidArgument(f"devices[{position}].{field}", str(exc)) from None
        out.append(item)
    return out


def node_to_pb(view: NodeView) -> types_pb2.Node:
    record = view.record
    reg = record.registration
    node = types_pb2.Node(
        node_id=reg.node_id,
        cluster=reg.cluster,
        region=reg.region,
        vendor=VENDOR_TO_PB[reg.vendor],
        agent_version=reg.agent_version,
        state=STATE_TO_PB[record.state],
        state_reason=record.state_reason,
        state_since=datetime_to_ts(record.state_since),
        labels=reg.labels,
        cordoned=record.cordoned,
    )
    for device in reg.devices:
        health, reason = record.device_health.get(device.index, (device.health, device.health_reason))
        node.devices.append(
            types_pb2.Device(
                uuid=device.uuid,
                index=device.index,
                model=device.model,
                memory_bytes=device.memory_bytes,
                numa_node=device.numa_node,
                pci_bus_id=device.pci_bus_id,
                health=HEALTH_TO_PB[health],
                health_reason=reason,
            )
        )
    if reg.lease is not None:
        node.lease.CopyFrom(
            types_pb2.LeaseTerms(
                provider=reg.lease.provider,
                lease_id=reg.lease.lease_id,
                start_time=datetime_to_ts(reg.lease.start_time),
                end_time=datetime_to_ts(view.record.lease_end or reg.lease.end_time),
                price_per_accelerator_hour=reg.lease.price_per_accelerator_hour,
                preemptible=reg.lease.preemptible,
            )
        )
    if view.last_heartbeat is not None:
        node.last_heartbeat.CopyFrom(datetime_to_ts(view.last_heartbeat))
    for sample in view.telemetry:
        node.telemetry.append(
            types_pb2.DeviceTelemetry(
                index=sample.index,
                utilization_percent=sample.utilization_percent,
                memory_used_bytes=sample.memory_used_bytes,
                temperature_celsius=sample.temperature_celsius,
                ecc_uncorrected_errors=sample.ecc_uncorrected_errors,
                xid_errors=sample.xid_errors,
                health=HEALTH_TO_PB[sample.health],
                health_reason=sample.health_reason,
            )
        )
    return node


def command_to_pb(command: NodeCommand) -> agent_pb2.ControlMessage:
    return agent_pb2.ControlMessage(
        command=agent_pb2.Command(
            kind=COMMAND_TO_PB[command.kind],
            reason=command.reason,
            heartbeat_interval_s=command.heartbeat_interval_s,
        )
    )


GiB = 1024**3


def _enum(value: int, enum: Any, prefix: str) -> str:
    name: str = enum.Name(value)
    return name.removeprefix(prefix).lower()


def node_summary(node: types_pb2.Node) -> dict[str, Any]:
    """The JSON shape of ``tokenfab nodes -o json`` (stable keys; add, never rename)."""
    models = list(dict.fromkeys(d.model for d in node.devices))
    memory = sorted({round(d.memory_bytes / GiB, 1) for d in node.devices})
    unhealthy = [d.index for d in node.devices if d.health == types_pb2.DEVICE_HEALTH_UNHEALTHY]
    lease_end = (
        node.lease.end_time.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        if node.HasField("lease")
        else None
    )
    last_beat = (
        node.last_heartbeat.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        if node.HasField("last_heartbeat")
        else None
    )
    return {
        "id": node.node_id,
        "cluster": node.cluster,
        "region": node.region,
        "vendor": _enum(node.vendor, types_pb2.Vendor, "VENDOR_"),
        "accelerator": "+".join(models),
        "device_count": len(node.devices),
        "memory_gib": memory[0] if len(memory) == 1 else memory,
        "state": _enum(node.state, types_pb2.NodeState, "NODE_STATE_"),
        "state_reason": node.state_reason,
        "cordoned": node.cordoned,
        "unhealthy_devices": unhealthy,
        "leased": node.HasField("lease"),
        "lease_provider": node.lease.provider if node.HasField("lease") else None,
        "lease_expires_at": lease_end,
        "price_per_accelerator_hour": node.lease.price_per_accelerator_hour
        if node.HasField("lease")
        else None,
        "preemptible": node.lease.preemptible if node.HasField("lease") else False,
        "last_heartbeat": last_beat,
        "agent_version": node.agent_version,
    }
