"""The Ray driver of one cluster: creates, finds and stops replica actors.

Placement, as the control plane decided it:

* **Pinning**: every fleet node's raylet carries the label ``tokenfab.io/node=<node id>`` (the
  agent starts it so, :mod:`agents.raylet`). A replica's actor, or every bundle of its placement
  group, selects that label, so Ray can only put it on the chosen node.
* **Gang placement**: with TP > 1 the replica's devices are reserved by one placement group of
  TP bundles (one accelerator each) with STRICT_PACK: all or nothing, on one node. The actor lives
  in bundle 0 and needs no accelerator itself; the engine it starts uses the whole gang (vLLM's
  own Ray backend picks up the current placement group the same way). With TP = 1 the actor
  holds the accelerator directly.
* **Devices**: Ray counts accelerators; which indices is the scheduler's choice. The actor gets
  the vendor's visible-devices variable with those indices and Ray's ``RAY_EXPERIMENTAL_NOSET_*``
  switch, so Ray does not overwrite it with its own pick.
* **Names**: actor ``<replica id>`` and placement group ``pg-<replica id>``, detached, in the
  ``tokenfab`` namespace. Names make every call idempotent and let a restarted control plane (or
  executor) adopt running actors instead of starting them again.

Ray's synchronous calls (GCS lookups) run in a worker thread; actor calls are awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from controlplane.executor.actor import ReplicaActor
from controlplane.executor.expand import EngineConfig, expand_process, launch_env
from tokenfab.accelerators import NODE_LABEL
from tokenfab.logs import get_logger
from tokenfab.v1 import executor_pb2

log = get_logger("executor.ray")

NAMESPACE = "tokenfab"
OBSERVE_TIMEOUT_S = 5.0
GPU_RESOURCES = {"GPU"}


def pg_name(replica_id: str) -> str:
    return f"pg-{replica_id}"


class RayExecutor:
    def __init__(
        self, cluster: str, address: str, *, namespace: str = NAMESPACE, engines: EngineConfig | None = None
    ) -> None:
        self.cluster = cluster
        self.address = address
        self.namespace = namespace
        self.engines = engines
        self._handles: dict[str, Any] = {}
        self._remote_class: Any = None

    def connect(self) -> None:
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(
            address=self.address,
            namespace=self.namespace,
            logging_level=logging.WARNING,
            log_to_driver=False,
            configure_logging=False,
        )
        self._remote_class = ray.remote(ReplicaActor)
        log.info("executor.connected", cluster=self.cluster, ray=self.address)

    def shutdown(self) -> None:
        import ray

        ray.shutdown()

    # -- inventory --------------------------------------------------------------------------

    def _inventory(self) -> executor_pb2.InventoryResponse:
        import ray

        response = executor_pb2.InventoryResponse(cluster=self.cluster, ray_address=self.address)
        for node in ray.nodes():  # type: ignore[no-untyped-call]
            labels = {str(k): str(v) for k, v in (node.get("Labels") or {}).items()}
            response.nodes.add(
                node_id=labels.get(NODE_LABEL, ""),
                ray_node_id=node["NodeID"],
                alive=bool(node["Alive"]),
                resources={k: float(v) for k, v in node.get("Resources", {}).items()},
                labels=labels,
            )
        return response

    async def inventory(self) -> executor_pb2.InventoryResponse:
        return await asyncio.to_thread(self._inventory)

    # -- start ------------------------------------------------------------------------------

    def _find(self, replica_id: str) -> Any | None:
        import ray

        handle = self._handles.get(replica_id)
        if handle is not None:
            return handle
        try:
            handle = ray.get_actor(replica_id, namespace=self.namespace)
        except ValueError:
            return None
        self._handles[replica_id] = handle
        return handle

    def _create(self, launch: executor_pb2.ReplicaLaunch) -> Any:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        resources = dict(launch.resources)
        selector = {NODE_LABEL: launch.node_id}
        env = launch_env(launch)  # derived here from checked fields; the launch carries none
        command = None
        if launch.WhichOneof("kind") == "process":
            command = expand_process(launch, self.engines or EngineConfig.load())
            env.update(command.env)
        options: dict[str, Any] = {
            "name": launch.replica_id,
            "namespace": self.namespace,
            "lifetime": "detached",
            "num_cpus": 0,
            "max_restarts": 0,
            "max_concurrency": 64,
            "runtime_env": {"env_vars": env},
        }
        if launch.tensor_parallel > 1:
            per_device = {k: v / launch.tensor_parallel for k, v in resources.items()}
            group = placement_group(
                [per_device] * launch.tensor_parallel,
                strategy="STRICT_PACK",
                name=pg_name(launch.replica_id),
                lifetime="detached",
                bundle_label_selector=[selector] * launch.tensor_parallel,
            )
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
            )
        else:
            gpus = sum(v for k, v in resources.items() if k in GPU_RESOURCES)
            options["num_gpus"] = gpus
            options["resources"] = {k: v for k, v in resources.items() if k not in GPU_RESOURCES}
            options["label_selector"] = selector
        handle = self._remote_class.options(**options).remote(launch.SerializeToString(), command)
        self._handles[launch.replica_id] = handle
        return handle

    async def start(self, launch: executor_pb2.ReplicaLaunch) -> executor_pb2.ReplicaObservation:
        handle = await asyncio.to_thread(self._find, launch.replica_id)
        if handle is None:
            try:
                handle = await asyncio.to_thread(self._create, launch)
            except ValueError:  # created concurrently under the same name: adopt it
                handle = await asyncio.to_thread(self._find, launch.replica_id)
                if handle is None:
                    raise
            log.info(
                "replica.created", replica=launch.replica_id, node=launch.node_id,
                devices=list(launch.devices), tp=launch.tensor_parallel, engine=launch.engine,
            )  # fmt: skip
        assert handle is not None
        handle.boot.remote()  # the actor answers once its worker process is up; no need to wait
        return executor_pb2.ReplicaObservation(
            replica_id=launch.replica_id,
            request_id=launch.request_id,
            generation=launch.generation,
            node_id=launch.node_id,
            state="starting",
        )

    # -- observe ----------------------------------------------------------------------------

    def _names(self) -> list[str]:
        import ray

        return sorted(
            entry["name"] if isinstance(entry, dict) else str(entry)
            for entry in ray.util.list_named_actors(all_namespaces=False)
        )

    async def _observe_one(self, name: str) -> executor_pb2.ReplicaObservation | None:
        handle = await asyncio.to_thread(self._find, name)
        if handle is None:
            return None
        try:
            raw = await asyncio.wait_for(handle.observe.remote(), OBSERVE_TIMEOUT_S)
        except TimeoutError:
            # still being scheduled, or its worker is starting: not an error yet
            return executor_pb2.ReplicaObservation(replica_id=name, state="starting", message="actor pending")
        except Exception as exc:  # RayActorError and friends: the actor is gone
            self._handles.pop(name, None)
            return executor_pb2.ReplicaObservation(replica_id=name, state="failed", message=_short(exc))
        return executor_pb2.ReplicaObservation.FromString(raw)

    async def observe(self) -> list[executor_pb2.ReplicaObservation]:
        names = await asyncio.to_thread(self._names)
        for gone in set(self._handles) - set(names):
            self._handles.pop(gone, None)
        results = await asyncio.gather(*(self._observe_one(n) for n in names))
        return [r for r in results if r is not None]

    # -- stop -------------------------------------------------------------------------------

    def _kill(self, replica_id: str, handle: Any | None) -> None:
        import ray
        from ray.util import get_placement_group, remove_placement_group

        if handle is not None:
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)
        with contextlib.suppress(Exception):
            remove_placement_group(get_placement_group(pg_name(replica_id)))
        self._handles.pop(replica_id, None)

    async def stop(self, replica_id: str, drain_s: float) -> bool:
        handle = await asyncio.to_thread(self._find, replica_id)
        if handle is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(handle.stop.remote(drain_s), drain_s + 5.0)
        await asyncio.to_thread(self._kill, replica_id, handle)
        log.info("replica.stopped", replica=replica_id, existed=handle is not None)
        return handle is not None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
