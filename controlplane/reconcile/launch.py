"""Replica record -> the executor's launch message: placement, Ray resources and the engine.

The control plane decides what a replica runs (model, engine, devices, dtype, port, prefill chunk);
the executor turns that into a command and an environment itself, from its own catalog and
operator-owned templates (:mod:`controlplane.executor.expand`): no command travels on the wire.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from controlplane.catalog.perf import EngineProfile, PerfAssumptions, Workload, prefill_chunk_tokens
from controlplane.catalog.types import Catalog, Dtype
from controlplane.domain.replicas import ReplicaRecord
from tokenfab.accelerators import RAY_RESOURCE
from tokenfab.v1 import executor_pb2

SIMULATED: Literal["simulated"] = "simulated"


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How replicas are served: ``simulated`` engines (demo, tests) or the ``real`` engine the
    catalog names for the vendor (vLLM family or a template engine)."""

    mode: Literal["simulated", "real"] = SIMULATED
    sim_start_delay_s: float = 2.0
    sim_speed: float = 1.0
    base_port: int = 18000  # real engines listen on base_port + first device index (unique per node)
    templates: dict[str, str] = field(default_factory=dict)
    model_paths: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 900.0
    assumptions: PerfAssumptions = field(default_factory=PerfAssumptions)


def engine_for(record: ReplicaRecord, catalog: Catalog, settings: EngineSettings) -> str:
    if settings.mode == SIMULATED:
        return SIMULATED
    engines = catalog.engines_for(catalog.model(record.model), record.vendor)
    return engines[0] if engines else ""


def build_launch(
    record: ReplicaRecord, catalog: Catalog, settings: EngineSettings, workload: Workload | None = None
) -> executor_pb2.ReplicaLaunch:
    """``workload`` (the request's mix and latency) sizes the prefill chunk to its TPOT target;
    without it the engine's default chunk is used."""
    model = catalog.model(record.model)
    accelerator = catalog.accelerator(record.accelerator)
    dtype = Dtype(record.dtype)
    chunk = (
        prefill_chunk_tokens(
            model, accelerator, record.tensor_parallel, dtype, workload, settings.assumptions
        )
        if workload is not None
        else None
    )
    launch = executor_pb2.ReplicaLaunch(
        replica_id=record.id,
        request_id=record.request_id,
        generation=record.generation,
        model=record.model,
        vendor=record.vendor.value,
        accelerator=record.accelerator,
        node_id=record.node_id,
        devices=list(record.devices),
        tensor_parallel=record.tensor_parallel,
        engine=record.engine,
        resources={RAY_RESOURCE[record.vendor.value]: float(record.tensor_parallel)},
    )
    if record.engine == SIMULATED:
        profile = EngineProfile.of(model, accelerator, record.tensor_parallel, dtype, settings.assumptions)
        launch.simulated.CopyFrom(
            executor_pb2.SimulatedEngine(
                profile_json=json.dumps(asdict(profile)),
                speed=settings.sim_speed,
                max_batch=profile.max_batch,
                chunk_tokens=chunk or 0,
                start_delay_s=settings.sim_start_delay_s,
            )
        )
    else:
        launch.process.CopyFrom(
            executor_pb2.ProcessEngine(
                dtype=dtype.value, port=settings.base_port + min(record.devices),
                max_num_batched_tokens=chunk or 0, ready_timeout_s=settings.ready_timeout_s,
            )
        )  # fmt: skip
    return launch
