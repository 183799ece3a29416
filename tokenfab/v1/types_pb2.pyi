import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Vendor(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VENDOR_UNSPECIFIED: _ClassVar[Vendor]
    VENDOR_NVIDIA: _ClassVar[Vendor]
    VENDOR_ASCEND: _ClassVar[Vendor]
    VENDOR_BIREN: _ClassVar[Vendor]
    VENDOR_METAX: _ClassVar[Vendor]

class DeviceHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_HEALTH_UNSPECIFIED: _ClassVar[DeviceHealth]
    DEVICE_HEALTH_HEALTHY: _ClassVar[DeviceHealth]
    DEVICE_HEALTH_DEGRADED: _ClassVar[DeviceHealth]
    DEVICE_HEALTH_UNHEALTHY: _ClassVar[DeviceHealth]

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_REGISTERING: _ClassVar[NodeState]
    NODE_STATE_READY: _ClassVar[NodeState]
    NODE_STATE_SUSPECT: _ClassVar[NodeState]
    NODE_STATE_LOST: _ClassVar[NodeState]
    NODE_STATE_CORDONED: _ClassVar[NodeState]
    NODE_STATE_DRAINING: _ClassVar[NodeState]
VENDOR_UNSPECIFIED: Vendor
VENDOR_NVIDIA: Vendor
VENDOR_ASCEND: Vendor
VENDOR_BIREN: Vendor
VENDOR_METAX: Vendor
DEVICE_HEALTH_UNSPECIFIED: DeviceHealth
DEVICE_HEALTH_HEALTHY: DeviceHealth
DEVICE_HEALTH_DEGRADED: DeviceHealth
DEVICE_HEALTH_UNHEALTHY: DeviceHealth
NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_REGISTERING: NodeState
NODE_STATE_READY: NodeState
NODE_STATE_SUSPECT: NodeState
NODE_STATE_LOST: NodeState
NODE_STATE_CORDONED: NodeState
NODE_STATE_DRAINING: NodeState

class Device(_message.Message):
    __slots__ = ("uuid", "index", "model", "memory_bytes", "numa_node", "pci_bus_id", "health", "health_reason")
    UUID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    NUMA_NODE_FIELD_NUMBER: _ClassVar[int]
    PCI_BUS_ID_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_REASON_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    index: int
    model: str
    memory_bytes: int
    numa_node: int
    pci_bus_id: str
    health: DeviceHealth
    health_reason: str
    def __init__(self, uuid: _Optional[str] = ..., index: _Optional[int] = ..., model: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., numa_node: _Optional[int] = ..., pci_bus_id: _Optional[str] = ..., health: _Optional[_Union[DeviceHealth, str]] = ..., health_reason: _Optional[str] = ...) -> None: ...

class LeaseTerms(_message.Message):
    __slots__ = ("provider", "lease_id", "start_time", "end_time", "price_per_accelerator_hour", "preemptible")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_ACCELERATOR_HOUR_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIBLE_FIELD_NUMBER: _ClassVar[int]
    provider: str
    lease_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    price_per_accelerator_hour: float
    preemptible: bool
    def __init__(self, provider: _Optional[str] = ..., lease_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., price_per_accelerator_hour: _Optional[float] = ..., preemptible: _Optional[bool] = ...) -> None: ...

class DeviceTelemetry(_message.Message):
    __slots__ = ("index", "utilization_percent", "memory_used_bytes", "temperature_celsius", "ecc_uncorrected_errors", "xid_errors", "health", "health_reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    ECC_UNCORRECTED_ERRORS_FIELD_NUMBER: _ClassVar[int]
    XID_ERRORS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    utilization_percent: float
    memory_used_bytes: int
    temperature_celsius: float
    ecc_uncorrected_errors: int
    xid_errors: int
    health: DeviceHealth
    health_reason: str
    def __init__(self, index: _Optional[int] = ..., utilization_percent: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., temperature_celsius: _Optional[float] = ..., ecc_uncorrected_errors: _Optional[int] = ..., xid_errors: _Optional[int] = ..., health: _Optional[_Union[DeviceHealth, str]] = ..., health_reason: _Optional[str] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "cluster", "region", "vendor", "devices", "lease", "agent_version", "state", "state_reason", "state_since", "last_heartbeat", "telemetry", "labels", "cordoned")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CORDONED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    cluster: str
    region: str
    vendor: Vendor
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    lease: LeaseTerms
    agent_version: str
    state: NodeState
    state_reason: str
    state_since: _timestamp_pb2.Timestamp
    last_heartbeat: _timestamp_pb2.Timestamp
    telemetry: _containers.RepeatedCompositeFieldContainer[DeviceTelemetry]
    labels: _containers.ScalarMap[str, str]
    cordoned: bool
    def __init__(self, node_id: _Optional[str] = ..., cluster: _Optional[str] = ..., region: _Optional[str] = ..., vendor: _Optional[_Union[Vendor, str]] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., lease: _Optional[_Union[LeaseTerms, _Mapping]] = ..., agent_version: _Optional[str] = ..., state: _Optional[_Union[NodeState, str]] = ..., state_reason: _Optional[str] = ..., state_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., telemetry: _Optional[_Iterable[_Union[DeviceTelemetry, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., cordoned: _Optional[bool] = ...) -> None: ...
