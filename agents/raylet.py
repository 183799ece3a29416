"""Join the node to its cluster's Ray: the agent runs ``ray start --block`` as a child process with
the node's accelerators as Ray resources and the Tokenfab labels, and restarts it if it dies.

Resources and labels (see :mod:`tokenfab.accelerators`): NVIDIA and MetaX devices are ``GPU``,
Ascend ``NPU``, Biren the custom ``biren_gpu``; plus ``accelerator_type:<model>`` (Ray's own
convention) and the labels ``tokenfab.io/node``, ``tokenfab.io/vendor``,
``tokenfab.io/accelerator`` and ``tokenfab.io/cluster`` that the executor's actors select.

No Ray drain on stop (``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0``): on SIGTERM, Ray 2.60's
``ray start --block`` first asks the GCS to drain the node and waits up to 30 s for it to go idle.
Replica actors never go idle, so that wait only delayed every stop; and when the GCS was already
gone (the head's machine, or ``tokenfab up``, killed first) the drain call itself hung for the
whole timeout. Tokenfab drains a node itself, before it stops (``tokenfab drain``, lease ends:
make-before-break); an agent that stops takes its node away at once, and the control plane
replaces its replicas. An operator who sets ``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S`` for the
agent keeps it (the agent still stops its raylet 8 s after SIGTERM).

No log monitor: it tails every worker log on the node and pushes the lines to the GCS for
drivers to print, and the executor, the only driver, turns that off (``log_to_driver=False``).
The logs stay in the node's session directory; the monitor only cost a Python process per node
(0.45 CPU-s at start and 0.26 CPU-s per idle 30 s, docs/benchmarks.md "Raylet start").

Each raylet gets its own ``--temp-dir``: several raylets on one machine (the embedded demo, the
tests) otherwise race for the same socket files. The agent's CPU count for Ray is small on purpose
(replica actors ask for no CPU; the engine processes they start are not Ray tasks).

Raylets on one host start a few at a time (:class:`StartGate`). A raylet waits a fixed time for its
dashboard and runtime-env agents (Python processes that import much of Ray) to publish their
ports and aborts when they are late; ten of them starting together on a two-core laptop (the
embedded demo) are all late, and restarting them together repeats it for ever. The gate is a set
of host-wide lock files, one per start slot (half the CPUs, at least one): a raylet holds a slot
from its start until its agents' port files appear (or it exits, or ``START_HOLD_MAX_S`` passes,
so a Ray version that names them otherwise only slows the start). On a real node, one agent per
host, the gate is always free.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agents.backoff import Backoff
from tokenfab.accelerators import ACCELERATOR_LABEL, CLUSTER_LABEL, NODE_LABEL, RAY_RESOURCE, VENDOR_LABEL
from tokenfab.logs import get_logger
from tokenfab.parent import die_with_parent

log = get_logger("agent.raylet")

# what a started raylet's agents write into its session directory (``<name>_<node id hex>``)
AGENT_PORT_FILES = ("dashboard_agent_listen_port_", "metrics_agent_port_", "runtime_env_agent_port_")
START_HOLD_MAX_S = 60.0
GATE_POLL_S = 0.2


def agents_started(temp_dir: Path, since: float) -> bool:
    """Whether the raylet started at ``since`` under ``temp_dir`` has its agents' ports (files of
    an earlier session, from before ``since``, do not count)."""
    session = temp_dir / "session_latest"
    try:
        names = [e.name for e in os.scandir(session) if e.is_file() and e.stat().st_mtime >= since - 1.0]
    except OSError:  # no session yet
        return False
    return all(any(n.startswith(prefix) for n in names) for prefix in AGENT_PORT_FILES)


class StartGate:
    """Host-wide start slots for raylets: ``slots`` lock files under ``directory`` (flock, so a
    slot whose holder died is free again at once)."""

    def __init__(self, directory: Path | None = None, slots: int | None = None) -> None:
        self.directory = directory or Path(tempfile.gettempdir()) / f"tokenfab-raylet-start-{os.getuid()}"
        self.slots = slots if slots is not None else max(1, (os.cpu_count() or 2) // 2)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def try_acquire(self) -> IO[bytes] | None:
        """A held slot's open lock file, or None when every slot is taken."""
        for slot in range(self.slots):
            handle = open(self.directory / f"slot-{slot}.lock", "ab")  # noqa: SIM115 - held until release
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return handle
        return None

    async def acquire(self, stop: asyncio.Event) -> IO[bytes] | None:
        """Wait for a slot (None if ``stop`` is set first)."""
        while not stop.is_set():
            handle = self.try_acquire()
            if handle is not None:
                return handle
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), GATE_POLL_S)
        return None

    @staticmethod
    def release(handle: IO[bytes] | None) -> None:
        if handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


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

    def environment(self) -> dict[str, str]:
        """What ``ray start`` gets on top of the agent's environment."""
        return {
            "RAY_USAGE_STATS_ENABLED": "0",
            # the replica actors inherit the raylet's environment: their engines listen on and
            # advertise this node's IP (controlplane.executor.engines.advertised_host)
            "TOKENFAB_RAY_NODE_IP": self.node_ip,
            # no Ray drain on stop (module docstring), unless the operator set one
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": os.environ.get(
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0"
            ),
        }

    def argv(self) -> list[str]:
        gpus = self.devices if RAY_RESOURCE[self.vendor] == "GPU" else 0
        ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
        return [
            ray, "start", "--address", self.address, "--block", "--disable-usage-stats",
            "--include-log-monitor", "false",  # nothing reads worker logs through a driver
            "--node-ip-address", self.node_ip, "--temp-dir", str(self.temp_dir),
            "--num-cpus", str(self.num_cpus), "--num-gpus", str(gpus),
            "--resources", json.dumps(self.resources(), sort_keys=True),
            "--labels", ",".join(f"{k}={v}" for k, v in self.labels().items()),
        ]  # fmt: skip


class Raylet:
    """Supervises the ``ray start --block`` child: restarts it with backoff, stops it on exit."""

    def __init__(
        self, spec: RayletSpec, *, log_path: Path | None = None, gate: StartGate | None = None
    ) -> None:
        self.spec = spec
        self.log_path = log_path or spec.temp_dir / "raylet-agent.log"
        self.gate = gate or StartGate()
        self.starts = 0
        self._proc: asyncio.subprocess.Process | None = None

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(base_s=1.0, cap_s=30.0)
        self.spec.temp_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.spec.environment()}
        while not stop.is_set():
            slot = await self.gate.acquire(stop)
            if slot is None:
                break
            try:
                started_at = time.time()
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
                await self._hold_until_up(waiter, stop, started_at)
            finally:
                self.gate.release(slot)
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

    async def _hold_until_up(self, waiter: asyncio.Task[int], stop: asyncio.Event, started_at: float) -> None:
        """Keep the start slot until the raylet's agents are up, it exited, or the hold ran out."""
        deadline = time.monotonic() + START_HOLD_MAX_S
        while not (waiter.done() or stop.is_set()) and time.monotonic() < deadline:
            if agents_started(self.spec.temp_dir, started_at):
                return
            await asyncio.wait({waiter}, timeout=GATE_POLL_S)
        if not (waiter.done() or stop.is_set()):
            log.warning("raylet.start_slow", node=self.spec.node_id, held_s=START_HOLD_MAX_S)

    async def terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        # SIGTERM to `ray start` alone: it stops the raylet and its agents itself (0.3 s; sent
        # to the whole group at once, they took seconds); then SIGKILL to what is left
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 8.0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
