"""Real parts for integration tests: one etcd per session, control planes on free loopback ports,
agents as real ``tokenfab agent`` processes, throwaway certificate authorities."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aetcd
import pytest

from controlplane.api.server import ControlPlane
from controlplane.config import ControlPlaneConfig
from controlplane.embedded.etcd import EtcdProcess, free_port
from controlplane.metrics import ControlPlaneMetrics
from tests.conftest import FIXTURES

SMALL_FLEET = FIXTURES / "fleet-small.yaml"
FAST = {"heartbeat_interval_s": 0.2, "suspect_after_missed": 3, "lost_after_s": 1.5}

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
async def etcd(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EtcdProcess]:
    base = tmp_path_factory.mktemp("etcd")
    proc = EtcdProcess(base / "data", log_file=base / "etcd.log")
    await proc.start()
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
async def _clean_keyspace(request: pytest.FixtureRequest) -> None:
    if "etcd" not in request.fixturenames:
        return
    proc: EtcdProcess = request.getfixturevalue("etcd")
    async with aetcd.Client(host=proc.host, port=proc.client_port) as client:
        await client.delete_prefix(b"/")


ControlPlaneFactory = Callable[..., Awaitable[ControlPlane]]


@pytest.fixture
async def control_plane(etcd: EtcdProcess) -> AsyncIterator[ControlPlaneFactory]:
    """Factory: ``await control_plane(port=..., **config)`` starts one; all are stopped at the end."""
    started: list[ControlPlane] = []

    async def start(*, port: int | None = None, **overrides: Any) -> ControlPlane:
        settings = {**FAST, **overrides}
        config = ControlPlaneConfig(
            address=f"127.0.0.1:{port or free_port()}", etcd_endpoint=etcd.endpoint, **settings
        )
        plane = ControlPlane(config, metrics=ControlPlaneMetrics())
        await plane.start()
        started.append(plane)
        return plane

    yield start
    for plane in started:
        await plane.stop(grace_s=0.1)


class AgentProcess:
    """A real ``tokenfab agent --backend simulated`` child process."""

    def __init__(self, node: str, address: str, log_dir: Path, extra: list[str] | None = None) -> None:
        self.node = node
        self.address = address
        self.log = log_dir / f"agent-{node}.log"
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        cmd = [
            sys.executable, "-m", "controlplane.cli.main", "agent", "--backend", "simulated",
            "--node", self.node, "--address", self.address, "--fleet", str(SMALL_FLEET),
            "--sim-epoch", "1767225600", *self.extra,
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def output(self, lines: int = 8) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    made: list[AgentProcess] = []

    def make(node: str, address: str, extra: list[str] | None = None) -> AgentProcess:
        agent = AgentProcess(node, address, tmp_path, extra).start()
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()


async def wait_for(
    predicate: Callable[[], bool],
    *,
    timeout: float = 20.0,
    what: str = "condition",
    detail: Callable[[], str] | None = None,
) -> float:
    """Poll until ``predicate()``; returns the seconds it took (never asserted on: machines are noisy).

    On timeout the error says what was awaited and, with ``detail``, what was seen instead.
    """
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            seen = f"; saw: {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def state_of(plane: ControlPlane, node: str) -> str | None:
    assert plane.registry is not None
    with contextlib.suppress(Exception):
        return plane.registry.get(node).state.value
    return None
