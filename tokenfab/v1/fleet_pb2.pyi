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

class NodeEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_EVENT_KIND_UNSPECIFIED: _ClassVar[NodeEventKind]
    NODE_EVENT_KIND_SNAPSHOT: _ClassVar[NodeEventKind]
    NODE_EVENT_KIND_UPSERT: _ClassVar[NodeEventKind]
    NODE_EVENT_KIND_DELETE: _ClassVar[NodeEventKind]
NODE_EVENT_KIND_UNSPECIFIED: NodeEventKind
NODE_EVENT_KIND_SNAPSHOT: NodeEventKind
NODE_EVENT_KIND_UPSERT: NodeEventKind
NODE_EVENT_KIND_DELETE: NodeEventKind

class ListNodesRequest(_message.Message):
    __slots__ = ("vendor", "cluster", "state")
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    vendor: _types_pb2.Vendor
    cluster: str
    state: _types_pb2.NodeState
    def __init__(self, vendor: _Optional[_Union[_types_pb2.Vendor, str]] = ..., cluster: _Optional[str] = ..., state: _Optional[_Union[_types_pb2.NodeState, str]] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_types_pb2.Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[_types_pb2.Node, _Mapping]]] = ...) -> None: ...

class GetNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class WatchNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeEvent(_message.Message):
    __slots__ = ("kind", "node")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    kind: NodeEventKind
    node: _types_pb2.Node
    def __init__(self, kind: _Optional[_Union[NodeEventKind, str]] = ..., node: _Optional[_Union[_types_pb2.Node, _Mapping]] = ...) -> None: ...

class CordonRequest(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UncordonRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeLeaseRequest(_message.Message):
    __slots__ = ("node_id", "notice_s", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NOTICE_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    notice_s: float
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., notice_s: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class ExtendLeaseRequest(_message.Message):
    __slots__ = ("node_id", "until", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    until: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("limit", "node_id", "request_id")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    limit: int
    node_id: str
    request_id: str
    def __init__(self, limit: _Optional[int] = ..., node_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class FleetEvent(_message.Message):
    __slots__ = ("at", "kind", "message", "node_id", "request_id", "replica_id")
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    kind: str
    message: str
    node_id: str
    request_id: str
    replica_id: str
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ..., node_id: _Optional[str] = ..., request_id: _Optional[str] = ..., replica_id: _Optional[str] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[FleetEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[FleetEvent, _Mapping]]] = ...) -> None: ...
