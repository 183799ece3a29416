"""Join the node to its cluster's Ray: the agent runs ``ray start --block`` as a child process with
the node's accelerators as Ray resources and the Tokenfab labels, and restarts it if it dies.

Resources and labels (see :mod:`tokenfab.accelerators`): NVIDIA and MetaX devices are ``GPU``,
Ascend ``NPU``, Biren the custom ``biren_gpu``; plus ``accelerator_type:<model>`` (Ray's own
convention) and the labels ``tokenfab.io/node``, ``tokenfab.io/vendor``,
``tokenfab.io/accelerator`` and ``tokenfab.io/cluster`` that the executor's actors select.

Each raylet gets its own ``--temp-dir``: several raylets on one machine (the embedded demo, the
tests) otherwise race for the same socket files. The agent's CPU count for Ray is small on purpose
(replica actors ask for no CPU; the engine processes they start are not Ray tasks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from agents.backoff import Backoff
from tokenfab.accelerators import ACCELERATOR_LABEL, CLUSTER_LABEL, NODE_LABEL, RAY_RESOURCE, VENDOR_LABEL
from tokenfab.logs import get_logger
from tokenfab.parent import die_with_parent

log = get_logger("agent.raylet")


@dataclass(frozen=True, slots=True)
class RayletSpec:
    address: str
    node_id: str
    cluster: str
    vendor: str
    accelerator: str
    devices: int
    temp_dir: Path
    node_ip: str = "127.0.0.1"
    num_cpus: int = 1

    def resources(self) -> dict[str, float]:
        resources = {f"accelerator_type:{self.accelerator}": 1.0}
        if self.devices and RAY_RESOURCE[self.vendor] != "GPU":
            resources[RAY_RESOURCE[self.vendor]] = float(self.devices)
        return resources

    def labels(self) -> dict[str, str]:
        return {
            NODE_LABEL: self.node_id,
            VENDOR_LABEL: self.vendor,
            ACCELERATOR_LABEL: self.accelerator,
            CLUSTER_LABEL: self.cluster,
        }

    def argv(self) -> list[str]:
        gpus = self.devices if RAY_RESOURCE[self.vendor] == "GPU" else 0
        ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
        return [
            ray, "start", "--address", self.address, "--block", "--disable-usage-stats",
            "--node-ip-address", self.node_ip, "--temp-dir", str(self.temp_dir),
            "--num-cpus", str(self.num_cpus), "--num-gpus", str(gpus),
            "--resources", json.dumps(self.resources(), sort_keys=True),
            "--labels", ",".join(f"{k}={v}" for k, v in self.labels().items()),
        ]  # fmt: skip


class Raylet:
    """Supervises the ``ray start --block`` child: restarts it with backoff, stops it on exit."""

    def __init__(self, spec: RayletSpec, *, log_path: Path | None = None) -> None:
        self.spec = spec
        self.log_path = log_path or spec.temp_dir / "raylet-agent.log"
        self.starts = 0
        self._proc: asyncio.subprocess.Process | None = None

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(base_s=1.0, cap_s=30.0)
        self.spec.temp_dir.mkdir(parents=True, exist_ok=True)
        # the replica actors inherit the raylet's environment: their engines listen on and
        # advertise this node's IP (controlplane.executor.engines.advertised_host)
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "TOKENFAB_RAY_NODE_IP": self.spec.node_ip}
        while not stop.is_set():
            with open(self.log_path, "ab") as out:  # noqa: ASYNC230 - once per raylet start
                self._proc = await asyncio.create_subprocess_exec(
                    *self.spec.argv(),
                    stdout=out,
                    stderr=out,
                    env=env,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),  # the raylet ends with its agent, even on kill -9
                )
            self.starts += 1
            log.info("raylet.started", node=self.spec.node_id, ray=self.spec.address, pid=self._proc.pid)
            waiter = asyncio.create_task(self._proc.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if stop.is_set():
                waiter.cancel()
                break
            log.warning("raylet.exited", node=self.spec.node_id, code=self._proc.returncode)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff.next_delay())
        await self.terminate()

    async def terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # ray start drains and stops its raylet
        try:
            await asyncio.wait_for(proc.wait(), 8.0)  # then the node is gone anyway
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
