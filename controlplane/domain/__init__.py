"""Pure domain types (pydantic), shared by every layer above. No I/O here."""

from controlplane.domain.nodes import (
    Device,
    DeviceHealth,
    DeviceTelemetry,
    LeaseTerms,
    NodeRecord,
    NodeRegistration,
    NodeState,
    Vendor,
    validation_message,
)

__all__ = [
    "Device",
    "DeviceHealth",
    "DeviceTelemetry",
    "LeaseTerms",
    "NodeRecord",
    "NodeRegistration",
    "NodeState",
    "Vendor",
    "validation_message",
]
