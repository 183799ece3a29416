import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LatencyClass(_message.Message):
    __slots__ = ("ttft_p95_ms", "tpot_p95_ms")
    TTFT_P95_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_P95_MS_FIELD_NUMBER: _ClassVar[int]
    ttft_p95_ms: float
    tpot_p95_ms: float
    def __init__(self, ttft_p95_ms: _Optional[float] = ..., tpot_p95_ms: _Optional[float] = ...) -> None: ...

class CapacitySpec(_message.Message):
    __slots__ = ("model", "input_tokens_per_second", "output_tokens_per_second", "latency", "allowed_vendors", "denied_vendors", "allowed_accelerators", "denied_accelerators", "clusters", "regions", "max_price_per_million_output_tokens", "priority", "mean_input_tokens", "mean_output_tokens", "tenant", "autoscaling", "max_unavailable_percent")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_VENDORS_FIELD_NUMBER: _ClassVar[int]
    DENIED_VENDORS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_ACCELERATORS_FIELD_NUMBER: _ClassVar[int]
    DENIED_ACCELERATORS_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_PER_MILLION_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MEAN_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MEAN_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    AUTOSCALING_FIELD_NUMBER: _ClassVar[int]
    MAX_UNAVAILABLE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    model: str
    input_tokens_per_second: float
    output_tokens_per_second: float
    latency: LatencyClass
    allowed_vendors: _containers.RepeatedScalarFieldContainer[str]
    denied_vendors: _containers.RepeatedScalarFieldContainer[str]
    allowed_accelerators: _containers.RepeatedScalarFieldContainer[str]
    denied_accelerators: _containers.RepeatedScalarFieldContainer[str]
    clusters: _containers.RepeatedScalarFieldContainer[str]
    regions: _containers.RepeatedScalarFieldContainer[str]
    max_price_per_million_output_tokens: float
    priority: int
    mean_input_tokens: float
    mean_output_tokens: float
    tenant: str
    autoscaling: AutoscalingSpec
    max_unavailable_percent: float
    def __init__(self, model: _Optional[str] = ..., input_tokens_per_second: _Optional[float] = ..., output_tokens_per_second: _Optional[float] = ..., latency: _Optional[_Union[LatencyClass, _Mapping]] = ..., allowed_vendors: _Optional[_Iterable[str]] = ..., denied_vendors: _Optional[_Iterable[str]] = ..., allowed_accelerators: _Optional[_Iterable[str]] = ..., denied_accelerators: _Optional[_Iterable[str]] = ..., clusters: _Optional[_Iterable[str]] = ..., regions: _Optional[_Iterable[str]] = ..., max_price_per_million_output_tokens: _Optional[float] = ..., priority: _Optional[int] = ..., mean_input_tokens: _Optional[float] = ..., mean_output_tokens: _Optional[float] = ..., tenant: _Optional[str] = ..., autoscaling: _Optional[_Union[AutoscalingSpec, _Mapping]] = ..., max_unavailable_percent: _Optional[float] = ...) -> None: ...

class AutoscalingSpec(_message.Message):
    __slots__ = ("enabled", "max_output_tokens_per_second", "max_spend_per_hour", "scale_to_zero", "advisory")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MAX_SPEND_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    SCALE_TO_ZERO_FIELD_NUMBER: _ClassVar[int]
    ADVISORY_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    max_output_tokens_per_second: float
    max_spend_per_hour: float
    scale_to_zero: bool
    advisory: bool
    def __init__(self, enabled: _Optional[bool] = ..., max_output_tokens_per_second: _Optional[float] = ..., max_spend_per_hour: _Optional[float] = ..., scale_to_zero: _Optional[bool] = ..., advisory: _Optional[bool] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("type", "status", "reason", "message", "last_transition_time")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_TRANSITION_TIME_FIELD_NUMBER: _ClassVar[int]
    type: str
    status: bool
    reason: str
    message: str
    last_transition_time: _timestamp_pb2.Timestamp
    def __init__(self, type: _Optional[str] = ..., status: _Optional[bool] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., last_transition_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("replica_id", "accelerator", "node_id", "devices", "tensor_parallel", "state", "predicted_output_tokens_per_second", "reason")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    TENSOR_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    accelerator: str
    node_id: str
    devices: _containers.RepeatedScalarFieldContainer[int]
    tensor_parallel: int
    state: str
    predicted_output_tokens_per_second: float
    reason: str
    def __init__(self, replica_id: _Optional[str] = ..., accelerator: _Optional[str] = ..., node_id: _Optional[str] = ..., devices: _Optional[_Iterable[int]] = ..., tensor_parallel: _Optional[int] = ..., state: _Optional[str] = ..., predicted_output_tokens_per_second: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class CapacityStatus(_message.Message):
    __slots__ = ("phase", "conditions", "replicas", "predicted_output_tokens_per_second", "ready_output_tokens_per_second", "observed_generation", "target_output_tokens_per_second")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    READY_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    TARGET_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    phase: str
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    predicted_output_tokens_per_second: float
    ready_output_tokens_per_second: float
    observed_generation: int
    target_output_tokens_per_second: float
    def __init__(self, phase: _Optional[str] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., predicted_output_tokens_per_second: _Optional[float] = ..., ready_output_tokens_per_second: _Optional[float] = ..., observed_generation: _Optional[int] = ..., target_output_tokens_per_second: _Optional[float] = ...) -> None: ...

class CapacityRequest(_message.Message):
    __slots__ = ("id", "tenant", "spec", "status", "generation", "created_at", "idempotency_key", "endpoint")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    spec: CapacitySpec
    status: CapacityStatus
    generation: int
    created_at: _timestamp_pb2.Timestamp
    idempotency_key: str
    endpoint: str
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., spec: _Optional[_Union[CapacitySpec, _Mapping]] = ..., status: _Optional[_Union[CapacityStatus, _Mapping]] = ..., generation: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., endpoint: _Optional[str] = ...) -> None: ...

class CreateCapacityRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    spec: CapacitySpec
    idempotency_key: str
    def __init__(self, spec: _Optional[_Union[CapacitySpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class GetCapacityRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListCapacityRequests(_message.Message):
    __slots__ = ("include_cancelled",)
    INCLUDE_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    include_cancelled: bool
    def __init__(self, include_cancelled: _Optional[bool] = ...) -> None: ...

class ListCapacityResponse(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[CapacityRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[CapacityRequest, _Mapping]]] = ...) -> None: ...

class WatchCapacityRequests(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CapacityEvent(_message.Message):
    __slots__ = ("kind", "request")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[CapacityEvent.Kind]
        KIND_SNAPSHOT: _ClassVar[CapacityEvent.Kind]
        KIND_UPSERT: _ClassVar[CapacityEvent.Kind]
    KIND_UNSPECIFIED: CapacityEvent.Kind
    KIND_SNAPSHOT: CapacityEvent.Kind
    KIND_UPSERT: CapacityEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    kind: CapacityEvent.Kind
    request: CapacityRequest
    def __init__(self, kind: _Optional[_Union[CapacityEvent.Kind, str]] = ..., request: _Optional[_Union[CapacityRequest, _Mapping]] = ...) -> None: ...

class UpdateCapacityRequest(_message.Message):
    __slots__ = ("id", "input_tokens_per_second", "output_tokens_per_second", "expected_generation")
    ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    input_tokens_per_second: float
    output_tokens_per_second: float
    expected_generation: int
    def __init__(self, id: _Optional[str] = ..., input_tokens_per_second: _Optional[float] = ..., output_tokens_per_second: _Optional[float] = ..., expected_generation: _Optional[int] = ...) -> None: ...

class CancelCapacityRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListReplicasRequest(_message.Message):
    __slots__ = ("request_id", "include_stopped")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_STOPPED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    include_stopped: bool
    def __init__(self, request_id: _Optional[str] = ..., include_stopped: _Optional[bool] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("id", "request_id", "model", "vendor", "accelerator", "cluster", "node_id", "devices", "tensor_parallel", "engine", "state", "reason", "actor_id", "endpoint", "generation", "predicted_output_tokens_per_second", "output_tokens_per_second", "input_tokens_per_second", "running", "waiting", "kv_cache_usage", "ttft_p95_s", "tpot_p95_s", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    TENSOR_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_USAGE_FIELD_NUMBER: _ClassVar[int]
    TTFT_P95_S_FIELD_NUMBER: _ClassVar[int]
    TPOT_P95_S_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    request_id: str
    model: str
    vendor: str
    accelerator: str
    cluster: str
    node_id: str
    devices: _containers.RepeatedScalarFieldContainer[int]
    tensor_parallel: int
    engine: str
    state: str
    reason: str
    actor_id: str
    endpoint: str
    generation: int
    predicted_output_tokens_per_second: float
    output_tokens_per_second: float
    input_tokens_per_second: float
    running: int
    waiting: int
    kv_cache_usage: float
    ttft_p95_s: float
    tpot_p95_s: float
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ..., vendor: _Optional[str] = ..., accelerator: _Optional[str] = ..., cluster: _Optional[str] = ..., node_id: _Optional[str] = ..., devices: _Optional[_Iterable[int]] = ..., tensor_parallel: _Optional[int] = ..., engine: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., actor_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., generation: _Optional[int] = ..., predicted_output_tokens_per_second: _Optional[float] = ..., output_tokens_per_second: _Optional[float] = ..., input_tokens_per_second: _Optional[float] = ..., running: _Optional[int] = ..., waiting: _Optional[int] = ..., kv_cache_usage: _Optional[float] = ..., ttft_p95_s: _Optional[float] = ..., tpot_p95_s: _Optional[float] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListReplicasResponse(_message.Message):
    __slots__ = ("replicas",)
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    def __init__(self, replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ...) -> None: ...
