"""The Ray world: the tests of this package share one (``ray_world``), so they run together,
one after another, on one pytest-xdist worker (tests/conftest.py groups them by this directory),
and the world is stopped when the last of them is done."""

from __future__ import annotations

import asyncio
import functools
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.embedded.etcd import free_port
from controlplane.embedded.ray import ExecutorProcess, RayHead
from controlplane.executor.service import RemoteExecutor
from tests.integration.conftest import AgentProcess, wait_for

RAY_NODES = {"t-nvidia-0": "test-a", "t-ascend-0": "test-a", "t-biren-0": "test-b", "t-metax-0": "test-b"}


@dataclass
class RayWorld:
    address: str  # where the agents look for the control plane
    executors: dict[str, RemoteExecutor]
    tenants: Path
    logs: Path
    agents: dict[str, AgentProcess]


@pytest.fixture(scope="package")
async def ray_world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RayWorld]:
    """Two local Ray clusters ("test-a", "test-b"), one executor process each, and four agent
    processes (``RAY_NODES``) whose raylets carry the simulated accelerators; no control plane
    (each test starts its own on ``address``). Ray clusters are slow to start on two cores, so
    one world serves every test of this package: each test gets a fresh keyspace, and actors a
    previous test left behind are stopped by the next reconciler as orphans. The world stops when
    the package's last test is done, not at the session's end."""
    root = Path(tempfile.mkdtemp(prefix="tfr-"))  # short: Ray's socket paths must stay < 108 bytes
    logs = tmp_path_factory.mktemp("ray-world")
    tenants = logs / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: ray, token: ray-token}\n")
    address = f"127.0.0.1:{free_port()}"
    heads = {
        c: RayHead(root / f"h{i}", log_file=logs / f"head-{c}.log")
        for i, c in enumerate(("test-a", "test-b"))
    }
    procs = {  # plaintext loopback executors: the control plane is their local admin
        c: ExecutorProcess(c, h.address, log_file=logs / f"executor-{c}.log", insecure_local_admin=True)
        for c, h in heads.items()
    }
    agents: list[AgentProcess] = []
    clients: dict[str, RemoteExecutor] = {}
    try:
        await asyncio.gather(*(asyncio.to_thread(head.start) for head in heads.values()))  # side by side
        for proc in procs.values():
            proc.spawn()
        for node, cluster in RAY_NODES.items():
            extra = ["--ray-address", heads[cluster].address, "--ray-temp-dir", str(root / node)]
            agents.append(AgentProcess(node, address, logs, extra).start())
        for proc in procs.values():
            await proc.wait_ready()
        clients = {c: RemoteExecutor(c, p.address) for c, p in procs.items()}
        for cluster, client in clients.items():
            wanted = {n for n, c in RAY_NODES.items() if c == cluster}
            await wait_for(
                functools.partial(ray_joined, client, wanted), timeout=120, interval=0.5,
                what=f"the raylets of {cluster} joining",
            )  # fmt: skip
        yield RayWorld(address, clients, tenants, logs, {a.node: a for a in agents})
    finally:
        for client in clients.values():
            await client.close()
        # each layer stopped side by side (every stop is a SIGTERM and a wait), raylets first
        await asyncio.gather(*(asyncio.to_thread(agent.stop) for agent in agents))
        await asyncio.gather(*(asyncio.to_thread(proc.stop) for proc in procs.values()))
        await asyncio.gather(*(asyncio.to_thread(head.stop, 5.0) for head in heads.values()))
        shutil.rmtree(root, ignore_errors=True)


async def ray_joined(client: RemoteExecutor, nodes: set[str]) -> bool:
    """Whether every one of ``nodes`` has a live raylet in the executor's cluster."""
    return nodes <= {n.node_id for n in (await client.inventory()).nodes if n.alive}
