from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InventoryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RayNode(_message.Message):
    __slots__ = ("node_id", "ray_node_id", "alive", "resources", "labels")
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RAY_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    ray_node_id: str
    alive: bool
    resources: _containers.ScalarMap[str, float]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, node_id: _Optional[str] = ..., ray_node_id: _Optional[str] = ..., alive: _Optional[bool] = ..., resources: _Optional[_Mapping[str, float]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class InventoryResponse(_message.Message):
    __slots__ = ("cluster", "ray_address", "nodes")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    RAY_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    ray_address: str
    nodes: _containers.RepeatedCompositeFieldContainer[RayNode]
    def __init__(self, cluster: _Optional[str] = ..., ray_address: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[RayNode, _Mapping]]] = ...) -> None: ...

class ProcessEngine(_message.Message):
    __slots__ = ("ready_timeout_s", "dtype", "port", "max_num_batched_tokens")
    READY_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_BATCHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ready_timeout_s: float
    dtype: str
    port: int
    max_num_batched_tokens: int
    def __init__(self, ready_timeout_s: _Optional[float] = ..., dtype: _Optional[str] = ..., port: _Optional[int] = ..., max_num_batched_tokens: _Optional[int] = ...) -> None: ...

class SimulatedEngine(_message.Message):
    __slots__ = ("profile_json", "speed", "max_batch", "chunk_tokens", "start_delay_s")
    PROFILE_JSON_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    START_DELAY_S_FIELD_NUMBER: _ClassVar[int]
    profile_json: str
    speed: float
    max_batch: int
    chunk_tokens: int
    start_delay_s: float
    def __init__(self, profile_json: _Optional[str] = ..., speed: _Optional[float] = ..., max_batch: _Optional[int] = ..., chunk_tokens: _Optional[int] = ..., start_delay_s: _Optional[float] = ...) -> None: ...

class ReplicaLaunch(_message.Message):
    __slots__ = ("replica_id", "request_id", "generation", "model", "vendor", "accelerator", "node_id", "devices", "tensor_parallel", "engine", "resources", "simulated", "process")
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    TENSOR_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    request_id: str
    generation: int
    model: str
    vendor: str
    accelerator: str
    node_id: str
    devices: _containers.RepeatedScalarFieldContainer[int]
    tensor_parallel: int
    engine: str
    resources: _containers.ScalarMap[str, float]
    simulated: SimulatedEngine
    process: ProcessEngine
    def __init__(self, replica_id: _Optional[str] = ..., request_id: _Optional[str] = ..., generation: _Optional[int] = ..., model: _Optional[str] = ..., vendor: _Optional[str] = ..., accelerator: _Optional[str] = ..., node_id: _Optional[str] = ..., devices: _Optional[_Iterable[int]] = ..., tensor_parallel: _Optional[int] = ..., engine: _Optional[str] = ..., resources: _Optional[_Mapping[str, float]] = ..., simulated: _Optional[_Union[SimulatedEngine, _Mapping]] = ..., process: _Optional[_Union[ProcessEngine, _Mapping]] = ...) -> None: ...

class StartReplicaRequest(_message.Message):
    __slots__ = ("launch",)
    LAUNCH_FIELD_NUMBER: _ClassVar[int]
    launch: ReplicaLaunch
    def __init__(self, launch: _Optional[_Union[ReplicaLaunch, _Mapping]] = ...) -> None: ...

class StopReplicaRequest(_message.Message):
    __slots__ = ("replica_id", "drain_s")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    DRAIN_S_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    drain_s: float
    def __init__(self, replica_id: _Optional[str] = ..., drain_s: _Optional[float] = ...) -> None: ...

class StopReplicaResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: _Optional[bool] = ...) -> None: ...

class ObserveRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EngineStats(_message.Message):
    __slots__ = ("input_tokens_per_second", "output_tokens_per_second", "running", "waiting", "kv_cache_usage", "ttft_p50_s", "ttft_p95_s", "tpot_p50_s", "tpot_p95_s", "finished")
    INPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_USAGE_FIELD_NUMBER: _ClassVar[int]
    TTFT_P50_S_FIELD_NUMBER: _ClassVar[int]
    TTFT_P95_S_FIELD_NUMBER: _ClassVar[int]
    TPOT_P50_S_FIELD_NUMBER: _ClassVar[int]
    TPOT_P95_S_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    input_tokens_per_second: float
    output_tokens_per_second: float
    running: int
    waiting: int
    kv_cache_usage: float
    ttft_p50_s: float
    ttft_p95_s: float
    tpot_p50_s: float
    tpot_p95_s: float
    finished: int
    def __init__(self, input_tokens_per_second: _Optional[float] = ..., output_tokens_per_second: _Optional[float] = ..., running: _Optional[int] = ..., waiting: _Optional[int] = ..., kv_cache_usage: _Optional[float] = ..., ttft_p50_s: _Optional[float] = ..., ttft_p95_s: _Optional[float] = ..., tpot_p50_s: _Optional[float] = ..., tpot_p95_s: _Optional[float] = ..., finished: _Optional[int] = ...) -> None: ...

class ReplicaObservation(_message.Message):
    __slots__ = ("replica_id", "state", "actor_id", "ray_node_id", "node_id", "endpoint", "message", "stats", "generation", "request_id", "env")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    RAY_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    state: str
    actor_id: str
    ray_node_id: str
    node_id: str
    endpoint: str
    message: str
    stats: EngineStats
    generation: int
    request_id: str
    env: _containers.ScalarMap[str, str]
    def __init__(self, replica_id: _Optional[str] = ..., state: _Optional[str] = ..., actor_id: _Optional[str] = ..., ray_node_id: _Optional[str] = ..., node_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., message: _Optional[str] = ..., stats: _Optional[_Union[EngineStats, _Mapping]] = ..., generation: _Optional[int] = ..., request_id: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ObserveResponse(_message.Message):
    __slots__ = ("replicas",)
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaObservation]
    def __init__(self, replicas: _Optional[_Iterable[_Union[ReplicaObservation, _Mapping]]] = ...) -> None: ...
