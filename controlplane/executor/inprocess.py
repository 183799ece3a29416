"""An executor in the process: simulated engines (:class:`~controlplane.executor.simengine.SimEngine`)
instead of Ray actors, on an injectable clock.

It answers the same four calls as the Ray executor (:class:`controlplane.executor.service.Executor`)
so that the reconcile loop runs whole in a unit test on the in-memory store, and it is the
in-process implementation next to the real one in the way the Store has a memory and an etcd one
(httpx's MockTransport). What it models: a start is idempotent per replica id; a replica is
``starting`` for its ``start_delay_s`` and ``ready`` after; a replica can be failed or a node
taken away (what Ray would report); stop removes the replica and says whether it existed.
Only simulated launches run; any other engine fails at once, with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

from controlplane.catalog.perf import EngineProfile
from controlplane.executor.simengine import SimEngine
from tokenfab.v1 import executor_pb2


@dataclass
class _Replica:
    launch: executor_pb2.ReplicaLaunch
    started_s: float
    delay_s: float
    engine: SimEngine | None
    failed: str = ""


class InProcessExecutor:
    """One cluster's executor, in memory. ``clock``: seconds, monotonic (a FakeClock in tests)."""

    def __init__(self, cluster: str, nodes: Iterable[str], *, clock: Callable[[], float]) -> None:
        self.cluster = cluster
        self.nodes = set(nodes)  # fleet node ids with a live Ray node
        self._clock = clock
        self._replicas: dict[str, _Replica] = {}
        self.starts: list[str] = []  # replica ids, in the order their start was asked
        self.stops: list[str] = []

    @property
    def replica_ids(self) -> list[str]:
        return sorted(self._replicas)

    async def inventory(self) -> executor_pb2.InventoryResponse:
        return executor_pb2.InventoryResponse(
            cluster=self.cluster,
            nodes=[
                executor_pb2.RayNode(node_id=n, ray_node_id=f"ray-{n}", alive=True)
                for n in sorted(self.nodes)
            ],
        )

    async def start(self, launch: executor_pb2.ReplicaLaunch) -> executor_pb2.ReplicaObservation:
        self.starts.append(launch.replica_id)
        if launch.replica_id not in self._replicas:
            engine, failed, delay = None, "", 0.0
            if launch.WhichOneof("kind") == "simulated":
                known = {f.name for f in fields(EngineProfile)}
                raw = json.loads(launch.simulated.profile_json)
                profile = EngineProfile(**{k: v for k, v in raw.items() if k in known})
                engine = SimEngine(profile, speed=launch.simulated.speed or 1.0)
                delay = launch.simulated.start_delay_s
            else:
                failed = "the in-process executor runs simulated engines only"
            self._replicas[launch.replica_id] = _Replica(launch, self._clock(), delay, engine, failed)
        return self._observation(launch.replica_id, self._replicas[launch.replica_id])

    async def stop(self, replica_id: str, drain_s: float) -> bool:
        self.stops.append(replica_id)
        return self._replicas.pop(replica_id, None) is not None

    async def observe(self) -> list[executor_pb2.ReplicaObservation]:
        return [
            self._observation(rid, r)
            for rid, r in sorted(self._replicas.items())
            if r.launch.node_id in self.nodes
        ]

    def fail(self, replica_id: str, message: str) -> None:
        """The replica's engine dies (Ray would report the actor failed)."""
        self._replicas[replica_id].failed = message

    def _observation(self, replica_id: str, replica: _Replica) -> executor_pb2.ReplicaObservation:
        now = self._clock()
        if replica.failed:
            state = "failed"
        elif now - replica.started_s < replica.delay_s:
            state = "starting"
        else:
            state = "ready"
        stats = executor_pb2.EngineStats()
        if replica.engine is not None and state == "ready":
            replica.engine.advance(now - replica.started_s)
            m = replica.engine.metrics()
            stats = executor_pb2.EngineStats(
                output_tokens_per_second=m.output_tokens_per_s, input_tokens_per_second=m.input_tokens_per_s,
                running=m.running, waiting=m.waiting, kv_cache_usage=m.kv_usage,
            )  # fmt: skip
        return executor_pb2.ReplicaObservation(
            replica_id=replica_id,
            state=state,
            actor_id=f"actor-{replica_id}",
            node_id=replica.launch.node_id,
            endpoint=f"inproc://{self.cluster}/{replica_id}" if state == "ready" else "",
            message=replica.failed,
            generation=replica.launch.generation,
            request_id=replica.launch.request_id,
            stats=stats,
        )
