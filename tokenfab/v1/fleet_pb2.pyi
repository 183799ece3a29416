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
