import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetAutoscalerStatusRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class ScalingDecision(_message.Message):
    __slots__ = ("request_id", "at", "policy", "mode", "applied", "action", "current_replicas", "desired_replicas", "reserved_output_tokens_per_second", "target_output_tokens_per_second", "reason", "demand_output_tokens_per_second", "forecast_output_tokens_per_second", "per_replica_output_tokens_per_second", "predicted_utilisation", "predicted_slo_ok", "cost_per_hour", "accelerator", "inputs")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TARGET_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEMAND_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    FORECAST_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PER_REPLICA_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_UTILISATION_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_SLO_OK_FIELD_NUMBER: _ClassVar[int]
    COST_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    at: _timestamp_pb2.Timestamp
    policy: str
    mode: str
    applied: bool
    action: str
    current_replicas: int
    desired_replicas: int
    reserved_output_tokens_per_second: float
    target_output_tokens_per_second: float
    reason: str
    demand_output_tokens_per_second: float
    forecast_output_tokens_per_second: float
    per_replica_output_tokens_per_second: float
    predicted_utilisation: float
    predicted_slo_ok: bool
    cost_per_hour: float
    accelerator: str
    inputs: _containers.ScalarMap[str, float]
    def __init__(self, request_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., policy: _Optional[str] = ..., mode: _Optional[str] = ..., applied: _Optional[bool] = ..., action: _Optional[str] = ..., current_replicas: _Optional[int] = ..., desired_replicas: _Optional[int] = ..., reserved_output_tokens_per_second: _Optional[float] = ..., target_output_tokens_per_second: _Optional[float] = ..., reason: _Optional[str] = ..., demand_output_tokens_per_second: _Optional[float] = ..., forecast_output_tokens_per_second: _Optional[float] = ..., per_replica_output_tokens_per_second: _Optional[float] = ..., predicted_utilisation: _Optional[float] = ..., predicted_slo_ok: _Optional[bool] = ..., cost_per_hour: _Optional[float] = ..., accelerator: _Optional[str] = ..., inputs: _Optional[_Mapping[str, float]] = ...) -> None: ...

class RequestAutoscaling(_message.Message):
    __slots__ = ("request_id", "tenant", "model", "advisory", "scale_to_zero", "reserved_output_tokens_per_second", "target_output_tokens_per_second", "max_output_tokens_per_second", "replicas", "last_decision")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ADVISORY_FIELD_NUMBER: _ClassVar[int]
    SCALE_TO_ZERO_FIELD_NUMBER: _ClassVar[int]
    RESERVED_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TARGET_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LAST_DECISION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tenant: str
    model: str
    advisory: bool
    scale_to_zero: bool
    reserved_output_tokens_per_second: float
    target_output_tokens_per_second: float
    max_output_tokens_per_second: float
    replicas: int
    last_decision: ScalingDecision
    def __init__(self, request_id: _Optional[str] = ..., tenant: _Optional[str] = ..., model: _Optional[str] = ..., advisory: _Optional[bool] = ..., scale_to_zero: _Optional[bool] = ..., reserved_output_tokens_per_second: _Optional[float] = ..., target_output_tokens_per_second: _Optional[float] = ..., max_output_tokens_per_second: _Optional[float] = ..., replicas: _Optional[int] = ..., last_decision: _Optional[_Union[ScalingDecision, _Mapping]] = ...) -> None: ...

class AutoscalerStatus(_message.Message):
    __slots__ = ("mode", "mode_reason", "mode_updated_at", "requests")
    MODE_FIELD_NUMBER: _ClassVar[int]
    MODE_REASON_FIELD_NUMBER: _ClassVar[int]
    MODE_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    mode: str
    mode_reason: str
    mode_updated_at: _timestamp_pb2.Timestamp
    requests: _containers.RepeatedCompositeFieldContainer[RequestAutoscaling]
    def __init__(self, mode: _Optional[str] = ..., mode_reason: _Optional[str] = ..., mode_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requests: _Optional[_Iterable[_Union[RequestAutoscaling, _Mapping]]] = ...) -> None: ...

class ListDecisionsRequest(_message.Message):
    __slots__ = ("request_id", "limit", "action")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    limit: int
    action: str
    def __init__(self, request_id: _Optional[str] = ..., limit: _Optional[int] = ..., action: _Optional[str] = ...) -> None: ...

class ListDecisionsResponse(_message.Message):
    __slots__ = ("decisions",)
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[ScalingDecision]
    def __init__(self, decisions: _Optional[_Iterable[_Union[ScalingDecision, _Mapping]]] = ...) -> None: ...

class SetAutoscalerModeRequest(_message.Message):
    __slots__ = ("mode", "reason")
    MODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    mode: str
    reason: str
    def __init__(self, mode: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
