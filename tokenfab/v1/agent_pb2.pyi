import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tokenfab.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CommandKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMMAND_KIND_UNSPECIFIED: _ClassVar[CommandKind]
    COMMAND_KIND_CORDON: _ClassVar[CommandKind]
    COMMAND_KIND_UNCORDON: _ClassVar[CommandKind]
    COMMAND_KIND_DRAIN: _ClassVar[CommandKind]
    COMMAND_KIND_CONFIG: _ClassVar[CommandKind]
    COMMAND_KIND_FENCE: _ClassVar[CommandKind]
COMMAND_KIND_UNSPECIFIED: CommandKind
COMMAND_KIND_CORDON: CommandKind
COMMAND_KIND_UNCORDON: CommandKind
COMMAND_KIND_DRAIN: CommandKind
COMMAND_KIND_CONFIG: CommandKind
COMMAND_KIND_FENCE: CommandKind

class RegisterRequest(_message.Message):
    __slots__ = ("node_id", "cluster", "region", "vendor", "devices", "lease", "agent_version", "labels")
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
    LABELS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    cluster: str
    region: str
    vendor: _types_pb2.Vendor
    devices: _containers.RepeatedCompositeFieldContainer[_types_pb2.Device]
    lease: _types_pb2.LeaseTerms
    agent_version: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, node_id: _Optional[str] = ..., cluster: _Optional[str] = ..., region: _Optional[str] = ..., vendor: _Optional[_Union[_types_pb2.Vendor, str]] = ..., devices: _Optional[_Iterable[_Union[_types_pb2.Device, _Mapping]]] = ..., lease: _Optional[_Union[_types_pb2.LeaseTerms, _Mapping]] = ..., agent_version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("state", "created", "heartbeat_interval_s")
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    state: _types_pb2.NodeState
    created: bool
    heartbeat_interval_s: float
    def __init__(self, state: _Optional[_Union[_types_pb2.NodeState, str]] = ..., created: _Optional[bool] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("node_id", "seq", "sent_at", "devices")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    seq: int
    sent_at: _timestamp_pb2.Timestamp
    devices: _containers.RepeatedCompositeFieldContainer[_types_pb2.DeviceTelemetry]
    def __init__(self, node_id: _Optional[str] = ..., seq: _Optional[int] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., devices: _Optional[_Iterable[_Union[_types_pb2.DeviceTelemetry, _Mapping]]] = ...) -> None: ...

class LeaseNotice(_message.Message):
    __slots__ = ("node_id", "end_time", "source", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    end_time: _timestamp_pb2.Timestamp
    source: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("heartbeat", "lease_notice")
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LEASE_NOTICE_FIELD_NUMBER: _ClassVar[int]
    heartbeat: Heartbeat
    lease_notice: LeaseNotice
    def __init__(self, heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., lease_notice: _Optional[_Union[LeaseNotice, _Mapping]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq", "state")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    state: _types_pb2.NodeState
    def __init__(self, seq: _Optional[int] = ..., state: _Optional[_Union[_types_pb2.NodeState, str]] = ...) -> None: ...

class FencedReplica(_message.Message):
    __slots__ = ("replica_id", "generation")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    generation: int
    def __init__(self, replica_id: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("kind", "reason", "heartbeat_interval_s", "fenced", "drain_s")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    FENCED_FIELD_NUMBER: _ClassVar[int]
    DRAIN_S_FIELD_NUMBER: _ClassVar[int]
    kind: CommandKind
    reason: str
    heartbeat_interval_s: float
    fenced: _containers.RepeatedCompositeFieldContainer[FencedReplica]
    drain_s: float
    def __init__(self, kind: _Optional[_Union[CommandKind, str]] = ..., reason: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ..., fenced: _Optional[_Iterable[_Union[FencedReplica, _Mapping]]] = ..., drain_s: _Optional[float] = ...) -> None: ...

class ControlMessage(_message.Message):
    __slots__ = ("ack", "command")
    ACK_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ack: Ack
    command: Command
    def __init__(self, ack: _Optional[_Union[Ack, _Mapping]] = ..., command: _Optional[_Union[Command, _Mapping]] = ...) -> None: ...
