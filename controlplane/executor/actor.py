"""The replica actor: one Ray actor per replica, named after the replica id, holding its engine.

Lifecycle inside the actor: ``starting`` (engine loading) -> ``ready`` (health check passed) ->
``stopping`` (draining) ; or ``failed`` with the reason. The actor is created with the vendor's
visible-devices variable in its environment (and Ray's own override switched off, see
:mod:`controlplane.executor.ray_driver`), so the engine process it starts sees exactly the
devices the scheduler chose. Methods exchange serialized protobuf messages so the driver and
the actor agree on one schema.

This module does not import Ray: the driver wraps the class with ``ray.remote`` when it creates
actors, which keeps the class testable without a cluster.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile

from controlplane.errors import InvalidArgument
from controlplane.executor.adapters import Engine, EngineStartError, ProcessEngine, SimulatedEngineServer
from controlplane.executor.engines import LaunchSpec
from controlplane.executor.expand import log_path
from tokenfab.accelerators import VISIBLE_DEVICES
from tokenfab.v1 import executor_pb2

STATS_TIMEOUT_S = 2.0


def make_engine(launch: executor_pb2.ReplicaLaunch, command: LaunchSpec | None = None) -> Engine:
    """The replica's engine. A process engine runs ``command``, which the executor expanded from
    its catalog and templates; the launch itself carries no command."""
    kind = launch.WhichOneof("kind")
    if kind == "simulated":
        return SimulatedEngineServer(launch.model, launch.simulated)
    if kind == "process":
        if command is None:
            raise EngineStartError("launch.process: the executor gave no expanded command")
        log_dir = os.environ.get("TOKENFAB_ENGINE_LOG_DIR", tempfile.gettempdir())
        return ProcessEngine(
            command,
            log_path(log_dir, launch.replica_id),
            ready_timeout_s=launch.process.ready_timeout_s or 900.0,
        )
    raise EngineStartError("launch.kind: neither simulated nor process")


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


class ReplicaActor:
    def __init__(self, launch: bytes, command: LaunchSpec | None = None) -> None:
        self.launch = executor_pb2.ReplicaLaunch.FromString(launch)
        self.command = command
        self.state = "starting"
        self.message = ""
        self.engine: Engine | None = None
        self._task: asyncio.Task[None] | None = None
        self._actor_id = ""
        self._ray_node_id = ""

    def _identify(self) -> None:
        try:
            import ray

            context = ray.get_runtime_context()
            self._actor_id = context.get_actor_id() or ""
            self._ray_node_id = context.get_node_id()
        except Exception:  # outside Ray (unit tests): no identity to report
            self._actor_id, self._ray_node_id = "", ""

    async def boot(self) -> bytes:
        """Start the engine in the background (idempotent) and report."""
        if self._task is None:
            self._identify()
            self._task = asyncio.create_task(self._start())
        return await self.observe()

    async def _start(self) -> None:
        try:
            self.engine = make_engine(self.launch, self.command)
            await self.engine.start()
        except (EngineStartError, OSError, ValueError, InvalidArgument) as exc:
            self.state, self.message = "failed", str(exc)
            return
        if self.state == "starting":
            self.state = "ready"

    async def observe(self) -> bytes:
        vendor_vars = sorted(set(VISIBLE_DEVICES.values()))
        observation = executor_pb2.ReplicaObservation(
            replica_id=self.launch.replica_id,
            request_id=self.launch.request_id,
            generation=self.launch.generation,
            state=self.state,
            actor_id=self._actor_id,
            ray_node_id=self._ray_node_id,
            node_id=self.launch.node_id,
            endpoint=self.engine.endpoint if self.engine is not None else "",
            message=self.message,
            env={name: os.environ[name] for name in vendor_vars if name in os.environ},
        )
        if self.state == "ready" and self.engine is not None:
            try:
                stats = await asyncio.wait_for(self.engine.stats(), STATS_TIMEOUT_S)
            except (OSError, TimeoutError, ValueError) as exc:
                observation.message = f"metrics unavailable: {exc}"
            else:
                observation.stats.CopyFrom(
                    executor_pb2.EngineStats(
                        input_tokens_per_second=stats.input_tokens_per_second,
                        output_tokens_per_second=stats.output_tokens_per_second,
                        running=stats.running,
                        waiting=stats.waiting,
                        kv_cache_usage=stats.kv_cache_usage,
                        ttft_p50_s=_finite(stats.ttft_p50_s),
                        ttft_p95_s=_finite(stats.ttft_p95_s),
                        tpot_p50_s=_finite(stats.tpot_p50_s),
                        tpot_p95_s=_finite(stats.tpot_p95_s),
                        finished=stats.finished,
                    )
                )
        return observation.SerializeToString()

    async def stop(self, drain_s: float) -> bool:
        self.state = "stopping"
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.engine is not None:
            await self.engine.stop(drain_s)
        return True
